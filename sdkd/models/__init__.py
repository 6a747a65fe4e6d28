"""Teachers (``st_alternet``, ``simvp``) and students (``unet``, ``resnet``, ``mixer``).

Every model maps ``(B, T_in, C, H, W)`` to ``(B, T_out, C, H, W)`` and accepts
``forward(x, return_features=True)`` returning ``(prediction, {name: feature})``.
"""

from .registry import build_model, check_model_config, config_keys, list_models, register_model

__all__ = ["build_model", "check_model_config", "config_keys", "list_models", "register_model"]

from . import mixer, resnet, simvp, st_alternet, unet  # noqa: F401, E402
from .presets import build_preset, list_presets, load_model_config  # noqa: E402
from .summary import ModelSummary, summary  # noqa: E402

__all__ += ["ModelSummary", "build_preset", "list_presets", "load_model_config", "summary"]
