"""Shipped YAML configs (model presets and experiment configs); data files only."""
