"""Experiment configuration: nested plain dicts from YAML, checked against a schema of defaults.

A config has the sections of ``DEFAULTS``. Unknown keys are errors (a typo must not be
silently ignored); every value is checked by type and range against ``sdkd.train.schema``
(one rule per key); the free-form sections (``FREE_FORM``) are checked up front against what
their consumers accept (the model builder's config keys, the KD loss's arguments). All of it
runs before any data is made. Command-line overrides are ``section.key=value`` strings whose
values are parsed as YAML scalars.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from sdkd.config_files import ConfigNotFoundError, resolve_config

from .schema import ConfigError, check_values

# Sections whose contents are free-form (validated by the component that consumes them).
FREE_FORM = {
    ("model", "cfg"),
    ("distill", "kd"),
    ("distill", "teachers"),
    ("distill", "features"),
    ("distill", "feature_cfg"),
}

DEFAULTS: dict[str, Any] = {
    "stage": "train",  # train | distill
    "seed": 42,
    "out_dir": "runs/default",
    "data": {
        "name": "ns",  # ns | rbc | ns_mat | weatherbench | taxibj | array
        "preset": "small",  # for generated NSE / RBC data
        "path": None,  # file or folder for real data
        "variables": None,
        "input_frames": 10,
        "output_frames": 10,
        "splits": None,
        "interval": None,  # taxibj only: 30min (default) | day (TaxiBJ+ daily totals, Table 2)
        "batch_size": 16,
        "num_workers": 0,
    },
    "model": {"name": "unet", "cfg": {}},  # a registry name, or "package.module:Class" with cfg as its kwargs
    "train": {
        "epochs": 50,
        "lr": 1e-4,
        "weight_decay": 0.0,
        "scheduler": "none",  # none | cosine | onecycle
        "warmup_epochs": 0,
        "patience": 10,  # early stopping on validation loss; 0 disables
        "clip_grad": 1.0,  # max grad norm; 0 disables
        "amp": True,  # mixed precision (bf16) on GPU only
        "progress": True,
        "log_every": 50,  # steps between reads of the training loss (progress bar, non-finite check)
        "max_steps_per_epoch": None,
        "deterministic": True,
        "loggers": [],  # extra metric sinks besides metrics.csv/jsonl: tensorboard (sdkd.train.loggers.LOGGERS)
    },
    "distill": {
        "teachers": [],  # sdkd checkpoint paths, or {checkpoint: state_dict.pt, model: {name, cfg}} (train/teachers.py)
        "strategy": "single",  # single | aver | a2d | camkd
        "lam": 1.0,
        "kd": {"type": "spectral", "cutoffs": 0.25, "alpha": 1.0, "reduction": "mean", "weighting": "fixed"},
        # {student_feature: teacher_feature}, or one mapping per teacher; with feature_loss spectral a
        # teacher side may be {low: block0.low, high: block0.high} (each band from its own branch)
        "features": {},
        "feature_loss": "mse",  # a sdkd.losses.FEATURE_LOSSES name: mse | ab | spectral | at
        "feature_cfg": {},  # options of the feature loss (spectral: cutoffs, alpha, ...; ab: margin; at: p)
        "feature_lam": 0.0,
        "C": 0.6,
        "grad_space": "output",
        "per_sample": False,
        "cache": True,
    },
}


def _merge(base: dict, update: Mapping, path: tuple[str, ...]) -> dict:
    for key, value in update.items():
        here = (*path, str(key))
        if key not in base:
            known = ", ".join(sorted(base)) or "(none)"
            raise ConfigError(f"unknown config key {'.'.join(here)!r}; known keys here: {known}")
        if here in FREE_FORM:
            base[key] = copy.deepcopy(value)
        elif isinstance(base[key], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"config key {'.'.join(here)!r} must be a mapping, got {value!r}")
            _merge(base[key], value, here)
        elif isinstance(base[key], (int, float)) and not isinstance(base[key], bool):
            base[key] = _coerce_number(value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=3e-4"`` -> (["train", "lr"], 0.0003)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: the value is not valid YAML: {' '.join(str(exc).split())}") from None
    return parts, _coerce_number(value)


def _coerce_number(value: Any) -> Any:
    """YAML 1.1 reads ``3e-4`` (no dot) as a string; read it as the number it is."""
    if isinstance(value, str):
        try:
            return float(value) if any(c in value.lower() for c in ".en") else int(value)
        except ValueError:
            return value
    return value


def _nest(parts: list[str], value: Any) -> dict:
    out: Any = value
    for p in reversed(parts):
        out = {p: out}
    return out


def build_config(files: Iterable[str | Path] = (), overrides: Iterable[str] = (), base: Mapping | None = None) -> dict:
    """Defaults, then each YAML file (a path, or a packaged config's name such as ``nse/teacher``) in order, then
    ``key=value`` overrides."""
    cfg = copy.deepcopy(DEFAULTS)
    if base:
        _merge(cfg, base, ())
    for f in files:
        try:
            path = resolve_config(f)  # a file, or a packaged config by name (nse/teacher)
        except ConfigNotFoundError as exc:
            raise ConfigError(str(exc)) from None
        try:
            with open(path) as fh:
                data = yaml.safe_load(fh) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {' '.join(str(exc).split())}") from None
        if not isinstance(data, Mapping):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top level")
        try:
            _merge(cfg, data, ())
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    for text in overrides:
        parts, value = parse_override(text)
        _merge(cfg, _nest(parts, value), ())
    return validate(cfg)


def validate(cfg: Mapping) -> dict:
    """Check every value against the schema (``sdkd.train.schema``: type, range, choices from the registries) and
    the free-form sections by their consumers' rules (``run.check_free_form``), without the data or any weights,
    so that a mistake fails in one line before any data is generated. Returns the config with its values
    normalised (e.g. ``1e3`` -> ``1000`` for an integer key); ``cfg`` itself is not changed."""
    cfg = check_values(cfg)
    d = cfg["distill"]
    teachers = d["teachers"]
    if not isinstance(teachers, (list, tuple)) or not all(
        isinstance(p, Mapping) or (isinstance(p, (str, Path)) and str(p)) for p in teachers
    ):
        raise ConfigError(
            f"config key distill.teachers: got {teachers!r}; expected a list of checkpoint paths or "
            "{checkpoint, model} mappings"
        )
    if cfg["stage"] == "distill" and not teachers:
        raise ConfigError("stage 'distill' needs distill.teachers (checkpoint paths)")
    from .run import check_free_form

    check_free_form(cfg)
    return cfg


def save_config(cfg: Mapping, path: str | Path) -> None:
    with open(path, "w") as fh:
        yaml.safe_dump(dict(cfg), fh, sort_keys=False)
