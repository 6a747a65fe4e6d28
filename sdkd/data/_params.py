"""Argument checks and preset merging shared by the data generators (Navier–Stokes, Rayleigh–Bénard)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any


def positive(value: Any, name: str, *, integer: bool = False) -> int | float:
    """``value`` as a positive finite float (or int); a TypeError/ValueError naming ``name`` otherwise."""
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{name} must be a {'positive integer' if integer else 'positive number'}, got {value!r}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return int(value) if integer else float(value)


def merge_preset(
    defaults: Mapping[str, Any], presets: Mapping[str, Mapping[str, Any]], preset: str | None, overrides: Mapping
) -> dict[str, Any]:
    """``defaults``, then the named preset's values, then the ``overrides`` that are not None; an unknown preset is a
    ValueError listing the choices, an override that names no parameter a TypeError."""
    params = dict(defaults)
    if preset is not None:
        if preset not in presets:
            raise ValueError(f"preset must be one of {sorted(presets)}, got {preset!r}")
        params.update(presets[preset])
    unknown = set(overrides) - set(params)
    if unknown:
        raise TypeError(f"unknown generator parameter(s): {sorted(unknown)}")
    params.update({k: v for k, v in overrides.items() if v is not None})
    return params
