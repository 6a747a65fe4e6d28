"""Checkpoints: written atomically, loaded without executing code from the file.

A checkpoint is a ``torch.save`` of plain data only — tensors, numbers, strings, lists and
dicts — so ``torch.load(weights_only=True)`` opens it; RNG states are stored as tensors.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sdkd.data.cache import atomic_path
from sdkd.errors import SdkdError

FORMAT = "sdkd-checkpoint"
VERSION = 1


class CheckpointError(SdkdError, RuntimeError):
    """A checkpoint is missing, corrupt, unsafe or does not match what loads it."""


def rng_state() -> dict[str, Any]:
    """Every RNG the training loop touches, as weights-only-loadable data."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [list(v) if isinstance(v, tuple) else v for v in random.getstate()],
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus format tag) to ``path`` atomically: temp file, fsync, rename (the data cache's
    ``atomic_path``, which also removes temps that a killed writer left behind)."""
    path = Path(path)
    data = {"format": FORMAT, "version": VERSION, **payload}
    with atomic_path(path) as tmp:
        torch.save(data, tmp)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``); clear errors for missing, corrupt,
    unsafe (pickled objects) or foreign files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower():  # not a pickle at all: junk or damaged bytes
            raise CheckpointError(f"checkpoint {str(path)!r} is corrupt or not a checkpoint: {exc}") from None
        raise CheckpointError(
            f"refusing to load {str(path)!r}: it contains pickled Python objects, which could run code "
            f"(sdkd checkpoints hold plain data only). Details: {str(exc).splitlines()[0]}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError) as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt or truncated: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not an sdkd checkpoint (no '{FORMAT}' format tag)")
    if data.get("version", 0) > VERSION:
        raise CheckpointError(
            f"{str(path)!r} has checkpoint version {data['version']}, newer than this sdkd ({VERSION})"
        )
    return data
