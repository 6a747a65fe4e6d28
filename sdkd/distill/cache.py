"""Teacher cache: frozen teachers' predictions (and chosen features) computed once, reused each epoch.

Teachers are frozen during distillation, so their outputs on the training set never change
(DESIGN.md section 6). :meth:`TeacherCache.build` runs every teacher once over the data and
stores, per sample index, the prediction and any requested named features — in RAM when
they fit ``max_memory_bytes``, otherwise in memory-mapped ``.npy`` files under ``path`` with
a JSON metadata file. On-disk caches are written to a temporary folder and renamed into place
when complete, and are reused only when the metadata (teacher weights fingerprint, sample
count, feature names, tag) matches.

The training loop needs sample indices to look the cache up: wrap the dataset in
:class:`IndexedDataset`, whose items are ``(index, x, y)``, and call
``distiller(x, y, index=index)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
import warnings
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from sdkd.data.cache import file_digest, remove_stale_temps, temp_prefix
from sdkd.errors import SdkdError

from .taps import forward_with_features

CACHE_VERSION = 1
META_FILE = "meta.json"


class CacheDamagedError(SdkdError, ValueError):
    """A file of an on-disk teacher cache no longer matches the digest recorded when it was written."""


PRED = "pred"

FeatureSpec = Union[None, Sequence[str], Sequence[Sequence[str]]]


class IndexedDataset(Dataset):
    """Wrap a dataset of ``(x, y)`` samples so that items are ``(index, x, y)``."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, Any, Any]:
        item = self.dataset[index]
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise TypeError(f"IndexedDataset: the wrapped dataset must return (x, y), got {type(item).__name__}")
        return (index, *item)

    def __getattr__(self, name: str) -> Any:  # expose mean/std/denormalize of the wrapped dataset
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


# ----------------------------------------------------------------------------- helpers
def as_teacher_list(teachers: nn.Module | Sequence[nn.Module] | None) -> list[nn.Module]:
    """Normalise ``teachers`` (one module or a sequence of modules) to a list."""
    if teachers is None:
        return []
    if isinstance(teachers, nn.Module):
        teachers = [teachers]
    out = list(teachers)
    for i, t in enumerate(out):
        if not isinstance(t, nn.Module):
            raise TypeError(f"teachers[{i}] must be an nn.Module, got {type(t).__name__}")
    return out


def feature_lists(features: FeatureSpec, num_teachers: int, arg: str = "features") -> list[tuple[str, ...]]:
    """Per-teacher feature names from ``None``, one list for all teachers, or one list per teacher."""
    if features is None:
        return [()] * num_teachers
    if isinstance(features, str):
        raise TypeError(f"{arg}: expected a sequence of feature names, got the string {features!r}")
    items = list(features)
    if all(isinstance(f, str) for f in items):
        names = tuple(items)
        return [names] * num_teachers
    if len(items) != num_teachers or any(isinstance(f, str) for f in items):
        raise ValueError(f"{arg}: give one list of names for all teachers or one list per teacher ({num_teachers})")
    return [tuple(f) for f in items]


def run_teacher(teacher: nn.Module, x: torch.Tensor, names: Sequence[str], index: int) -> dict[str, torch.Tensor]:
    """Run a frozen teacher under ``no_grad``; ``{"pred": ..., name: feature}``.

    A feature name is one the teacher returns from ``forward(x, return_features=True)`` or the path of
    one of its submodules (a forward hook, :mod:`sdkd.distill.taps`), so any ``nn.Module`` can be a
    teacher. Raises ``KeyError`` naming ``features`` when the teacher has no such feature.
    """
    with torch.no_grad():
        pred, feats = forward_with_features(teacher, x, names, f"teachers[{index}]")
    return {PRED: pred, **feats}


def fingerprint(teachers: Sequence[nn.Module]) -> str:
    """SHA-256 of the teachers' parameters and buffers (names, shapes, dtypes, values)."""
    h = hashlib.sha256()
    for i, t in enumerate(teachers):
        h.update(f"teacher{i}:{type(t).__name__}".encode())
        for name, v in t.state_dict().items():
            h.update(f"{name}:{tuple(v.shape)}:{v.dtype}".encode())
            flat = v.detach().cpu().contiguous().reshape(-1)  # 1-D so 0-dim buffers (BatchNorm counters) can be viewed
            h.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return h.hexdigest()


_NP_VIEW = {torch.bfloat16: (np.int16, torch.int16)}  # numpy has no bfloat16: store the bits


def _np_dtype(dtype: torch.dtype) -> np.dtype:
    if dtype in _NP_VIEW:
        return np.dtype(_NP_VIEW[dtype][0])
    return torch.empty((), dtype=dtype).numpy().dtype


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu().contiguous()
    if t.dtype in _NP_VIEW:
        t = t.view(_NP_VIEW[t.dtype][1])
    return t.numpy()


def _from_numpy(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a))
    return t.view(dtype) if dtype in _NP_VIEW else t


_DTYPES = {str(d): d for d in (torch.float32, torch.float64, torch.float16, torch.bfloat16)}


# ----------------------------------------------------------------------------- batches of data
def _batches(data: Dataset | DataLoader | Iterable, batch_size: int):
    """Yield ``(indices LongTensor, x)`` from an indexable dataset or a loader of ``(index, x, y)``."""
    if isinstance(data, IndexedDataset):
        data = data.dataset
    if isinstance(data, DataLoader) or not hasattr(data, "__getitem__"):
        for b, batch in enumerate(data):
            if not (isinstance(batch, (tuple, list)) and len(batch) == 3):
                raise TypeError(
                    "data: a loader must yield (index, x, y) batches; wrap its dataset in sdkd.distill.IndexedDataset"
                )
            idx = torch.as_tensor(batch[0])
            if idx.dtype not in (torch.int64, torch.int32) or idx.dim() != 1:
                raise TypeError(f"data: batch {b} has indices of dtype {idx.dtype} and shape {tuple(idx.shape)}")
            yield idx.long(), batch[1]
        return
    n = len(data)
    for start in range(0, n, batch_size):
        items = [data[i] for i in range(start, min(n, start + batch_size))]
        if not all(isinstance(it, (tuple, list)) and len(it) >= 2 for it in items):
            raise TypeError("data: dataset items must be (x, y) tuples")
        yield torch.arange(start, start + len(items)), torch.stack([torch.as_tensor(it[0]) for it in items])


# ----------------------------------------------------------------------------- the cache
class TeacherCache:
    """Per-sample teacher outputs: ``cache[indices]`` -> one ``{"pred": (B, ...), feature: ...}`` per teacher.

    Build with :meth:`build`, reopen a disk cache with :meth:`open`. ``location`` is ``"memory"``
    or the cache folder.
    """

    def __init__(self, arrays: list[dict[str, Any]], meta: dict[str, Any], location: str):
        self._arrays = arrays
        self.meta = meta
        self.location = location
        self._dtypes = [{k: _DTYPES[v["dtype"]] for k, v in t.items()} for t in meta["teachers"]]

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        teachers: nn.Module | Sequence[nn.Module],
        data: Dataset | DataLoader,
        features: FeatureSpec = None,
        path: str | os.PathLike | None = None,
        max_memory_bytes: int = 1 << 30,
        batch_size: int = 32,
        device: torch.device | str | None = None,
        tag: str = "",
        overwrite: bool = False,
        progress: bool = False,
    ) -> TeacherCache:
        """Run the (frozen, eval-mode) teachers once over ``data`` and store their outputs.

        ``data``: a dataset of ``(x, y)`` (read in index order, ``batch_size`` at a time) or a
        loader yielding ``(index, x, y)`` (see :class:`IndexedDataset`) that covers every index.
        ``features``: names to store besides the prediction — one list for all teachers or
        one per teacher. Storage is RAM if the total fits ``max_memory_bytes``, else
        memory-mapped files in ``path`` (a temporary folder, removed with the cache, when
        ``path`` is None). A finished cache at ``path`` with matching metadata is reused
        unless ``overwrite``. ``device``: where teachers run (default: their own device).
        ``tag``: free text stored in the metadata and required to match on reuse (e.g. a
        dataset description, since the data itself is not hashed). ``progress``: show a bar over the
        samples (``sdkd.train.progress.progress_enabled`` decides it in the training commands).
        """
        teachers = as_teacher_list(teachers)
        if not teachers:
            raise ValueError("teachers: need at least one teacher")
        if path is not None and Path(path).exists():  # it is replaced on rebuild: only if it is a teacher cache
            p = Path(path)
            if not p.is_dir() or (any(p.iterdir()) and not (p / META_FILE).is_file()):
                raise ValueError(f"path: {p} exists and is not a teacher cache (no {META_FILE}); choose another path")
        names = feature_lists(features, len(teachers))
        for i, ns in enumerate(names):
            if PRED in ns:
                raise ValueError(f"features: {PRED!r} is reserved for the prediction (teacher {i})")
            if len(set(ns)) != len(ns):
                raise ValueError(f"features: duplicate names for teacher {i}: {list(ns)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = len(data.dataset) if isinstance(data, DataLoader) else len(data)
        if n < 1:
            raise ValueError("data: the dataset is empty")
        for t in teachers:
            t.eval()
            t.requires_grad_(False)
        fp = fingerprint(teachers)
        key = {"version": CACHE_VERSION, "num_samples": n, "fingerprint": fp, "features": [list(x) for x in names]}
        key["tag"] = tag
        if path is not None and not overwrite:
            meta_file = Path(path) / META_FILE
            if meta_file.is_file():
                old = json.loads(meta_file.read_text())
                if all(old.get(k) == v for k, v in key.items()) and "sha256" in old:
                    try:
                        return cls.open(path)
                    except CacheDamagedError as exc:  # rebuilt below
                        warnings.warn(f"{exc}; rebuilding it", RuntimeWarning, stacklevel=2)

        arrays: list[dict[str, Any]] | None = None
        filled = torch.zeros(n, dtype=torch.bool)
        tmp: Path | None = None
        location = "memory"
        bar = _progress_bar(n, progress)
        for idx, x in _batches(data, batch_size):
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
                raise IndexError(f"data: sample index out of range [0, {n})")
            outs = []
            for i, t in enumerate(teachers):
                dev = device if device is not None else _module_device(t)
                outs.append(run_teacher(t, torch.as_tensor(x).to(dev), names[i], i))
            if arrays is None:  # first batch: choose the storage from the per-sample sizes
                key["teachers"] = [
                    {k: {"shape": list(v.shape[1:]), "dtype": str(v.dtype)} for k, v in o.items()} for o in outs
                ]
                per_sample = sum(v[0].numel() * v.element_size() for o in outs for v in o.values())
                key["nbytes"] = per_sample * n
                if per_sample * n <= max_memory_bytes:
                    arrays = [{k: torch.empty((n, *v.shape[1:]), dtype=v.dtype) for k, v in o.items()} for o in outs]
                else:
                    final = Path(path) if path is not None else Path(tempfile.mkdtemp(prefix="sdkd-teacher-cache-"))
                    final.parent.mkdir(parents=True, exist_ok=True)
                    remove_stale_temps(final)  # folders of a killed earlier build (GBs of memory maps)
                    tmp = final.parent / f"{temp_prefix(final)}{uuid.uuid4().hex[:8]}"
                    tmp.mkdir(parents=True)
                    location = str(final)
                    arrays = [
                        {
                            k: np.lib.format.open_memmap(
                                tmp / f"t{i}_{j}.npy", mode="w+", dtype=_np_dtype(v.dtype), shape=(n, *v.shape[1:])
                            )
                            for j, (k, v) in enumerate(o.items())
                        }
                        for i, o in enumerate(outs)
                    ]
            for i, o in enumerate(outs):
                for k, v in o.items():
                    spec = key["teachers"][i][k]
                    if list(v.shape[1:]) != spec["shape"] or str(v.dtype) != spec["dtype"] or v.shape[0] != len(idx):
                        raise ValueError(f"teachers[{i}] output {k!r} changed shape/dtype between batches")
                    host = v.detach().cpu()  # the copy the cache stores anyway: the check reads nothing more
                    bad = ~torch.isfinite(host).reshape(len(host), -1).all(1)
                    if bool(bad.any()):
                        if tmp is not None:
                            shutil.rmtree(tmp, ignore_errors=True)  # our own temporary folder
                        raise ValueError(
                            f"teachers[{i}] output {k!r} holds NaN or inf for training sample {int(idx[bad][0])}: "
                            "the teacher is broken (diverged or corrupted weights) or the data lies outside its "
                            "range; nothing was cached"
                        )
                    if isinstance(arrays[i][k], torch.Tensor):
                        arrays[i][k][idx] = host
                    else:
                        arrays[i][k][idx.numpy()] = _to_numpy(host)
            filled[idx] = True
            if bar is not None:
                bar.update(len(idx))
        if bar is not None:
            bar.close()
        if not bool(filled.all()):
            missing = int((~filled).sum())
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            raise ValueError(f"data: {missing} of {n} samples were never produced (a sampler that drops samples?)")
        assert arrays is not None
        if tmp is None:
            return cls(arrays, key, location)
        for t_arrays in arrays:  # flush, then publish the folder atomically
            for a in t_arrays.values():
                a.flush()
        del arrays
        files = [{k: f"t{i}_{j}.npy" for j, k in enumerate(spec)} for i, spec in enumerate(key["teachers"])]
        key["files"] = files
        key["sha256"] = {name: file_digest(tmp / name) for row in files for name in row.values()}
        meta_tmp = tmp / (META_FILE + ".partial")
        meta_tmp.write_text(json.dumps(key, indent=1))
        os.replace(meta_tmp, tmp / META_FILE)
        final = Path(location)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        cache = cls.open(final)
        if path is None:  # our own temporary folder: remove it with the cache object
            weakref.finalize(cache, shutil.rmtree, str(final), True)
        return cache

    @classmethod
    def open(cls, path: str | os.PathLike) -> TeacherCache:
        """Open a finished on-disk cache (read-only memory maps), its files checked against their SHA-256 digests
        (``CacheDamagedError`` if one changed on disk; ``build`` then rebuilds the cache)."""
        path = Path(path)
        meta_file = path / META_FILE
        if not meta_file.is_file():
            raise FileNotFoundError(f"path: {path} holds no finished teacher cache ({META_FILE} missing)")
        meta = json.loads(meta_file.read_text())
        if meta.get("version") != CACHE_VERSION:
            raise ValueError(f"path: cache version {meta.get('version')} != {CACHE_VERSION}; rebuild it")
        for name, digest in (meta.get("sha256") or {}).items():  # caches written before digests have none
            if file_digest(path / name) != digest:
                raise CacheDamagedError(
                    f"path: {path / name} does not match the digest in {META_FILE} (damaged on disk)"
                )
        arrays = []
        for spec, files in zip(meta["teachers"], meta["files"]):
            t_arrays = {}
            for k, s in spec.items():
                a = np.load(path / files[k], mmap_mode="r")
                if list(a.shape) != [meta["num_samples"], *s["shape"]]:
                    raise ValueError(f"path: {files[k]} has shape {a.shape}, metadata says {s['shape']}")
                t_arrays[k] = a
            arrays.append(t_arrays)
        return cls(arrays, meta, str(path))

    # -- access -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.meta["num_samples"])

    @property
    def num_teachers(self) -> int:
        return len(self._arrays)

    @property
    def nbytes(self) -> int:
        return int(self.meta["nbytes"])

    def keys(self, teacher: int = 0) -> tuple[str, ...]:
        """Stored names for one teacher: ``"pred"`` then its features."""
        return tuple(self._arrays[teacher])

    def __getitem__(
        self, indices: int | slice | Sequence[int] | torch.Tensor | np.ndarray
    ) -> list[dict[str, torch.Tensor]]:
        n = len(self)
        if isinstance(indices, slice):
            idx = torch.arange(n)[indices]
        else:
            idx = torch.as_tensor(indices).reshape(-1)
        if idx.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise TypeError(f"indices: expected integer sample indices, got dtype {idx.dtype}")
        idx = idx.long().cpu()
        if idx.numel() and (int(idx.min()) < -n or int(idx.max()) >= n):
            raise IndexError(f"indices: out of range for a cache of {n} samples")
        idx = torch.where(idx < 0, idx + n, idx)
        out = []
        for arrays, dtypes in zip(self._arrays, self._dtypes):
            d = {}
            for k, a in arrays.items():
                d[k] = a[idx] if isinstance(a, torch.Tensor) else _from_numpy(a[idx.numpy()], dtypes[k])
            out.append(d)
        return out

    def __repr__(self) -> str:
        return (
            f"TeacherCache(teachers={self.num_teachers}, samples={len(self)}, keys={self.keys()}, "
            f"nbytes={self.nbytes}, location={self.location!r})"
        )


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from sdkd.train.progress import progress_bar

    return progress_bar(total, "teacher cache", True, unit="sample")


def _module_device(m: nn.Module) -> torch.device:
    for p in m.parameters():
        return p.device
    for b in m.buffers():
        return b.device
    return torch.device("cpu")
