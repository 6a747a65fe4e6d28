"""Model registry: ``build_model(name, in_shape, out_frames, **cfg)`` builds any sdkd model.

Each architecture file registers a builder with ``@register_model("name", config_keys=...)``; a
builder takes ``in_shape=(T_in, C, H, W)``, ``out_frames`` and keyword overrides of its default
config. ``config_keys`` lists those overrides, so ``check_model_config`` can reject a typo in a
config before any data is loaded or any weights are allocated.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import Any, Callable

from torch import nn

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_CONFIG_KEYS: dict[str, frozenset[str] | None] = {}


def register_model(
    name: str, config_keys: Iterable[str] | None = None
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder under ``name``; ``config_keys``: the ``cfg`` keys it accepts (None: not checked)."""

    def deco(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} is registered twice")
        _BUILDERS[name] = builder
        _CONFIG_KEYS[name] = None if config_keys is None else frozenset(config_keys)
        return builder

    return deco


def init_keys(cls: type) -> list[str]:
    """Keyword arguments of ``cls(in_shape, out_frames, ...)`` after the two shape arguments."""
    params = inspect.signature(cls).parameters.values()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in params if p.kind in kinds and p.name not in ("in_shape", "out_frames")]


def list_models() -> list[str]:
    return sorted(_BUILDERS)


def config_keys(name: str) -> frozenset[str] | None:
    """The ``cfg`` keys model ``name`` accepts, or None when its builder did not declare them."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; available: {list_models()}")
    return _CONFIG_KEYS[name]


def check_model_config(name: str, cfg: Mapping[str, Any]) -> None:
    """Reject an unknown model ``name`` (``ValueError``) or unknown ``cfg`` keys (``TypeError``, like a
    bad keyword argument) without building the model: cheap enough to run before loading data."""
    keys = config_keys(name)
    unknown = sorted(set(map(str, cfg)) - keys) if keys is not None else []
    if unknown:
        raise TypeError(f"model {name!r} has no config key(s) {unknown}; valid keys: {sorted(keys)}")


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
