"""Model registry: ``build_model(name, in_shape, out_frames, **cfg)`` builds any sdkd model.

Each architecture file registers a builder with ``@register_model("name")``; a builder takes
``in_shape=(T_in, C, H, W)``, ``out_frames`` and keyword overrides of its default config.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def deco(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} is registered twice")
        _BUILDERS[name] = builder
        return builder

    return deco


def list_models() -> list[str]:
    return sorted(_BUILDERS)


def build_model(name: str, in_shape: tuple[int, int, int, int], out_frames: int | None = None, **cfg) -> nn.Module:
    """Build model ``name`` for inputs ``(T_in, C, H, W)`` predicting ``out_frames`` frames
    (default ``T_in``); ``cfg`` overrides the model's default configuration."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; available: {list_models()}")
    if len(in_shape) != 4 or any(int(v) <= 0 for v in in_shape):
        raise ValueError(f"in_shape must be (T_in, C, H, W) of positive ints, got {in_shape}")
    in_shape = tuple(int(v) for v in in_shape)
    out_frames = in_shape[0] if out_frames is None else int(out_frames)
    if out_frames <= 0:
        raise ValueError(f"out_frames must be positive, got {out_frames}")
    return _BUILDERS[name](in_shape=in_shape, out_frames=out_frames, **cfg)
