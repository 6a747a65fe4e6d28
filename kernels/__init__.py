"""Triton kernels of sdkd, installed as ``sdkd.kernels``.

Importing this package is cheap and does not import Triton; each submodule does.
"""
