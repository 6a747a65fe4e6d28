"""Training engine: fit loop, checkpoints, DDP and configs (DESIGN.md section 8)."""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import DEFAULTS, ConfigError, build_config
from .distributed import DistInfo, init_distributed
from .loop import FitResult, Trainer

__all__ = [
    "DEFAULTS",
    "CheckpointError",
    "ConfigError",
    "DistInfo",
    "FitResult",
    "Trainer",
    "build_config",
    "init_distributed",
    "load_checkpoint",
    "save_checkpoint",
]
