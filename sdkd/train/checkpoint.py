"""Checkpoints: written atomically, loaded without executing code from the file, verified by a digest.

A checkpoint is a ``torch.save`` of plain data only — tensors, numbers, strings, lists and
dicts — so ``torch.load(weights_only=True)`` opens it; RNG states are stored as tensors. It also
stores ``digest``, a SHA-256 of its contents (every tensor's dtype, shape and bytes, every key and
value, in order), written in the same atomic file and checked on load, so a bit flipped or a region
zeroed on disk is an error rather than different numbers. The digest guards against damage, not
against someone who edits the file on purpose (they can recompute it); loading never runs code anyway.
"""

from __future__ import annotations

import hashlib
import pickle
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sdkd.data.cache import atomic_path
from sdkd.errors import SdkdError

FORMAT = "sdkd-checkpoint"
VERSION = 2  # 2: with a content digest (version 1 files, written before digests, load without one)
DIGEST_KEY = "digest"


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


def _feed(h: Any, obj: Any) -> None:
    """Hash ``obj`` into ``h``: type tags, container sizes and order, tensors by dtype, shape and bytes."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        h.update(f"T{t.dtype}{tuple(t.shape)};".encode())
        if t.numel():
            h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    elif isinstance(obj, Mapping):
        h.update(f"D{len(obj)};".encode())
        for k, v in obj.items():
            _feed(h, k)
            _feed(h, v)
    elif isinstance(obj, (list, tuple)):
        h.update(f"{'L' if isinstance(obj, list) else 'U'}{len(obj)};".encode())
        for v in obj:
            _feed(h, v)
    else:  # str, int, float (repr round-trips), bool, None, bytes
        text = repr(obj)
        h.update(f"S{type(obj).__name__}{len(text)};{text}".encode())


def content_digest(data: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a checkpoint's contents without its ``digest`` entry."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in data.items() if k != DIGEST_KEY})
    return h.hexdigest()


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus format tag and content digest) to ``path`` atomically: temp file, fsync, rename (the
    data cache's ``atomic_path``, which also removes temps that a killed writer left behind)."""
    path = Path(path)
    data = {"format": FORMAT, "version": VERSION, **payload}
    data[DIGEST_KEY] = content_digest(data)
    with atomic_path(path) as tmp:
        torch.save(data, tmp)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``) and verify its digest; clear errors for missing,
    corrupt (digest mismatch included), unsafe (pickled objects) or foreign files."""
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
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt or truncated: {_first_line(exc)}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not an sdkd checkpoint (no '{FORMAT}' format tag)")
    version = data.get("version", 0)
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(f"{str(path)!r} has checkpoint version {version!r}, newer than this sdkd ({VERSION})")
    stored = data.pop(DIGEST_KEY, None)
    if version >= 2 and (not isinstance(stored, str) or stored != content_digest(data)):
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt: its contents do not match the digest stored with them "
            "(changed or damaged on disk since it was written); use another copy"
        )
    return data


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
