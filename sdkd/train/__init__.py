"""Training engine: fit loop, checkpoints, DDP and configs (DESIGN.md section 8).

The names below are loaded on first use, so ``sdkd train --help`` (which imports ``sdkd.train.cli``)
does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DEFAULTS": "config",
    "CheckpointError": "checkpoint",
    "ConfigError": "config",
    "DistInfo": "distributed",
    "FitResult": "loop",
    "Trainer": "loop",
    "build_config": "config",
    "init_distributed": "distributed",
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
