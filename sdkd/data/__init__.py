"""Datasets: loaders returning ``(x, y)`` windows ``(T, C, H, W)`` with train-split z-score.

Names are resolved lazily (PEP 562), so ``import sdkd.data`` does not import scipy, h5py or
xarray; each loader imports what it needs when it is first used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "WindowDataset": "windows",
    "resolve_splits": "windows",
    "ArrayDataset": "array",
    "NavierStokesDataset": "fno",
    "WeatherBenchDataset": "weatherbench",
    "TaxiBJDataset": "taxibj",
}
_SUBMODULES = ("windows", "array", "fno", "weatherbench", "taxibj", "navier_stokes", "rbc", "rbc_cache", "cache", "cli")

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBMODULES))
