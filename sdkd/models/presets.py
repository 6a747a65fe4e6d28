"""Per-dataset default model configurations, read from ``configs/models/<dataset>.yaml``.

Each file gives the paper's shapes for one dataset (``in_shape: [T_in, C, H, W]``,
``out_frames``) and the default teacher and student configurations for them, so that
``build_model(name, in_shape, out_frames, **cfg)`` reproduces the defaults. The folder is found
from ``$SDKD_CONFIG_DIR`` (its ``models/`` subfolder) or the source checkout's ``configs/``.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from .registry import build_model

_ALIASES = {"ns": "nse", "navier_stokes": "nse"}


def config_dir() -> Path:
    """The folder holding ``<dataset>.yaml`` model presets."""
    from sdkd.config_files import MODELS, packaged_config_root

    return packaged_config_root() / MODELS


def list_presets() -> list[str]:
    """Datasets that have a model preset file."""
    d = config_dir()
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def _read(dataset: str) -> dict:
    import yaml

    dataset = _ALIASES.get(dataset, dataset)
    path = config_dir() / f"{dataset}.yaml"
    if not path.is_file():
        raise ValueError(f"no model preset for dataset {dataset!r} (looked for {path}); available: {list_presets()}")
    with open(path) as fh:
        data = yaml.safe_load(fh) or {}
    for key in ("in_shape", "out_frames"):
        if key not in data:
            raise ValueError(f"{path}: missing key {key!r}")
    return data


def load_model_config(dataset: str, name: str) -> dict:
    """Preset of model ``name`` for ``dataset``: ``{"name", "in_shape", "out_frames", "cfg", "role"}``,
    ``role`` being ``"teacher"`` or ``"student"``; ``cfg`` holds the keyword arguments for ``build_model``."""
    data = _read(dataset)
    for role in ("teachers", "students"):
        models = data.get(role) or {}
        if name in models:
            return {
                "name": name,
                "in_shape": tuple(int(v) for v in data["in_shape"]),
                "out_frames": int(data["out_frames"]),
                "cfg": dict(models[name] or {}),
                "role": role[:-1],
            }
    known = sorted({*(data.get("teachers") or {}), *(data.get("students") or {})})
    raise ValueError(f"dataset {dataset!r} has no preset for model {name!r}; known: {known}")


def build_preset(dataset: str, name: str, **overrides) -> nn.Module:
    """``build_model`` with the preset shapes and config of ``name`` on ``dataset``; ``overrides`` win."""
    spec = load_model_config(dataset, name)
    return build_model(name, spec["in_shape"], spec["out_frames"], **{**spec["cfg"], **overrides})
