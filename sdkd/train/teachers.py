"""``distill.teachers`` entries -> frozen teacher modules, checked before any data is generated.

An entry is either

- a path to an sdkd checkpoint (``runs/nse/teacher/best.pt``), which holds its own model spec, or
- a mapping ``{checkpoint: weights.pt, model: {name: ..., cfg: {...}}}`` for a plain ``state_dict``
  file (``torch.save(model.state_dict(), "weights.pt")``, or a dict holding it under ``state_dict``
  or ``model``) plus the model to load it into. ``model`` is the same mapping as the config's own
  ``model`` section: a registry name (built for the data's shapes) or an import path
  ``package.module:Class`` whose ``cfg`` are its keyword arguments (:mod:`sdkd.models.imported`).

Every file is opened with ``torch.load(weights_only=True)``: a pickled model object is refused, no
code from a file ever runs.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import CheckpointError
from .config import ConfigError

ENTRY_KEYS = ("checkpoint", "model")


def check_teacher_entries(entries: Any, files: bool = True) -> None:
    """Each entry is a path or ``{checkpoint, model: {name, cfg}}`` with a model that exists and takes
    ``cfg``; with ``files``, every file exists. Cheap: nothing is loaded or built."""
    from .run import check_model_section

    if not isinstance(entries, (list, tuple)):
        raise ConfigError(
            f"distill.teachers must be a list of checkpoint paths or {{checkpoint: weights.pt, model: {{...}}}}, "
            f"got {entries!r}"
        )
    for i, entry in enumerate(entries):
        where = f"distill.teachers[{i}]"
        if isinstance(entry, Mapping):
            unknown = sorted(set(map(str, entry)) - set(ENTRY_KEYS))
            if unknown or "checkpoint" not in entry or "model" not in entry:
                raise ConfigError(
                    f"{where} must be {{checkpoint: weights.pt, model: {{name: ..., cfg: {{...}}}}}}, got keys "
                    f"{sorted(map(str, entry))}"
                )
            model = entry["model"]
            if not isinstance(model, Mapping) or "name" not in model or set(map(str, model)) - {"name", "cfg"}:
                raise ConfigError(f"{where}.model must be {{name: ..., cfg: {{...}}}}, got {model!r}")
            check_model_section(model, f"{where}.model")
            path = entry["checkpoint"]
        elif isinstance(entry, (str, Path)):
            path = entry
        else:
            raise ConfigError(f"{where} must be a checkpoint path or a mapping, got {entry!r}")
        if files and not Path(str(path)).is_file():
            raise CheckpointError(f"checkpoint {str(path)!r} does not exist")


def teacher_path(entry: Any) -> str:
    """The weights file of an entry (for messages and the run's record)."""
    return str(entry["checkpoint"] if isinstance(entry, Mapping) else entry)


def load_state_dict_file(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """A plain ``state_dict`` (or one under ``state_dict``/``model``) from ``path``, opened weights-only."""
    try:
        data = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refusing to load {str(path)!r}: it holds pickled Python objects (a whole model?), which could run code; "
            f"save model.state_dict() instead. Details: {str(exc).splitlines()[0]}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt or truncated: {exc}") from None
    for key in ("state_dict", "model"):
        if isinstance(data, Mapping) and isinstance(data.get(key), Mapping):
            data = data[key]
            break
    if not (isinstance(data, Mapping) and data and all(isinstance(v, torch.Tensor) for v in data.values())):
        raise CheckpointError(f"{str(path)!r} holds no state_dict (a mapping of parameter names to tensors)")
    return dict(data)


def load_teacher(
    entry: Any, in_shape: tuple[int, ...], out_frames: int, device: str | torch.device = "cpu"
) -> nn.Module:
    """The teacher of one entry, in eval mode on ``device``, checked to map ``(1, *in_shape)`` to
    ``out_frames`` frames of the same ``(C, H, W)``."""
    from .run import build_from_spec, load_model, model_spec

    path = teacher_path(entry)
    if not isinstance(entry, Mapping):
        teacher, ck = load_model(path, device)
        spec = ck["model_spec"]
        if tuple(spec["in_shape"]) != tuple(in_shape) or spec["out_frames"] != out_frames:
            raise ConfigError(
                f"teacher {path}: trained for in_shape {spec['in_shape']} -> {spec['out_frames']} frames, "
                f"but the data gives {list(in_shape)} -> {out_frames}"
            )
        return teacher
    teacher = build_from_spec(model_spec(entry["model"], in_shape, out_frames))
    try:
        teacher.load_state_dict(load_state_dict_file(path, device))
    except RuntimeError as exc:
        name = entry["model"]["name"]
        first = str(exc).strip().splitlines()
        raise ConfigError(
            f"teacher {path}: its weights do not fit model {name!r} as configured ({' '.join(s.strip() for s in first)})"
        ) from None
    teacher = teacher.to(device).eval()
    with torch.no_grad():
        pred = teacher(torch.zeros(1, *in_shape, device=device))
    pred = pred[0] if isinstance(pred, (tuple, list)) else pred
    want = (1, out_frames, *in_shape[1:])
    if not isinstance(pred, torch.Tensor) or tuple(pred.shape) != want:
        got = tuple(pred.shape) if isinstance(pred, torch.Tensor) else type(pred).__name__
        raise ConfigError(
            f"teacher {path}: model {entry['model']['name']!r} maps (1, {', '.join(map(str, in_shape))}) to {got}, "
            f"but the data needs {want}; fix its model.cfg"
        )
    return teacher
