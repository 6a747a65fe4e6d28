"""Sliding-window datasets with train-split z-score: the base every loader builds on.

A loader reduces its files to one or more contiguous *segments* ``(T, C, H, W)`` per split
(a segment never spans a gap in time or two independent trajectories) plus the training
statistics; :class:`WindowDataset` does the rest. Windows are not materialised: an index maps
to ``(segment, start)`` and ``__getitem__`` slices the raw (possibly memory-mapped) segment and
normalises just that window, so memory stays at one copy of the split's data at most.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Union

import numpy as np
import torch
from torch.utils.data import Dataset

SPLITS = ("train", "val", "test")
SplitSpec = Union[Sequence[float], Sequence[int], Mapping[str, Sequence[int]]]

# Largest number of elements read at once when scanning data for statistics / NaN checks.
_CHUNK_ELEMS = 1 << 24


# ----------------------------------------------------------------------------- argument checks
def check_split(split: str, where: str) -> str:
    """Return ``split`` if it is one of train/val/test, else raise naming ``where``."""
    if split not in SPLITS:
        raise ValueError(f"{where}: split must be one of {SPLITS}, got {split!r}")
    return split


def check_positive_int(value: Any, name: str, where: str, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``; bools and floats are rejected."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{where}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_numeric_dtype(dtype: np.dtype, what: str) -> None:
    """Raise ``TypeError`` unless ``dtype`` is a real integer or floating type."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "iuf":
        raise TypeError(f"{what}: expected a real numeric (integer or float) array, got dtype {dtype}")


def as_numpy(array: Any) -> np.ndarray:
    """A numpy view of ``array`` (numpy, memmap or CPU tensor); no copy when possible."""
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


# ----------------------------------------------------------------------------- splits
def resolve_splits(n: int, splits: SplitSpec, what: str) -> dict[str, tuple[int, int]]:
    """Turn a split spec into disjoint ``[start, stop)`` ranges over ``n`` items, in order.

    ``splits`` is three fractions ``(train, val, test)`` summing to at most 1, three counts
    (ints) summing to at most ``n``, or a mapping ``{"train": (start, stop), ...}`` of explicit
    index ranges (all three keys, pairwise disjoint). The train range must not be empty.
    """
    if isinstance(splits, Mapping):
        missing = [s for s in SPLITS if s not in splits]
        if missing or set(splits) - set(SPLITS):
            raise ValueError(f"{what}: splits mapping needs exactly the keys {SPLITS}, got {sorted(splits)}")
        out = {}
        for s in SPLITS:
            rng = tuple(splits[s])
            if len(rng) != 2 or not all(isinstance(v, (int, np.integer)) for v in rng):
                raise ValueError(f"{what}: splits[{s!r}] must be a (start, stop) pair of ints, got {splits[s]!r}")
            a, b = int(rng[0]), int(rng[1])
            if not 0 <= a <= b <= n:
                raise ValueError(f"{what}: splits[{s!r}] = ({a}, {b}) is outside [0, {n}]")
            out[s] = (a, b)
        ordered = sorted(out.items(), key=lambda kv: kv[1])
        for (s1, (_, b1)), (s2, (a2, _)) in zip(ordered, ordered[1:]):
            if a2 < b1:
                raise ValueError(f"{what}: splits {s1!r} and {s2!r} overlap ({out[s1]} and {out[s2]})")
    else:
        vals = tuple(splits)
        if len(vals) != 3:
            raise ValueError(f"{what}: splits must have 3 entries (train, val, test), got {vals!r}")
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in vals):
            counts = [int(v) for v in vals]
            if min(counts) < 0 or sum(counts) > n:
                raise ValueError(f"{what}: split counts {tuple(counts)} must be >= 0 and sum to at most {n}")
        elif all(isinstance(v, (int, float, np.floating, np.integer)) for v in vals):
            fr = [float(v) for v in vals]
            if any(not math.isfinite(f) or f < 0 for f in fr) or sum(fr) > 1 + 1e-9:
                raise ValueError(f"{what}: split fractions {tuple(fr)} must be >= 0 and sum to at most 1")
            edges = np.round(np.cumsum([0.0, *fr]) * n).astype(int)
            counts = np.diff(np.minimum(edges, n)).tolist()
        else:
            raise ValueError(f"{what}: splits must be fractions, counts or a mapping of ranges, got {vals!r}")
        out, start = {}, 0
        for s, c in zip(SPLITS, counts):
            out[s] = (start, start + c)
            start += c
    if out["train"][1] <= out["train"][0]:
        raise ValueError(f"{what}: the train split is empty ({n} items, splits={splits!r})")
    return out


# ----------------------------------------------------------------------------- statistics
def _chunks(segment: Any):
    """Yield float64 numpy chunks of ``segment`` along its first axis."""
    per_row = max(1, int(np.prod(segment.shape[1:])))
    rows = max(1, _CHUNK_ELEMS // per_row)
    for i in range(0, segment.shape[0], rows):
        yield np.asarray(segment[i : i + rows], dtype=np.float64)


def check_finite(segments: Sequence[Any], what: str) -> None:
    """Raise ``ValueError`` naming ``what`` if any segment holds NaN or Inf."""
    for seg in segments:
        if np.dtype(seg.dtype).kind != "f":
            continue
        for chunk in _chunks(seg):
            if not np.isfinite(chunk).all():
                bad = int((~np.isfinite(chunk)).sum())
                raise ValueError(f"{what}: data contains NaN or Inf ({bad} non-finite values in one chunk)")


class RunningStats:
    """Streaming mean/std (float64) over all axes but the channel axis 1 of ``(T, C, H, W)``
    chunks, per channel or pooled; so statistics never need the whole split in memory."""

    def __init__(self, channels: int, per_channel: bool):
        self.per_channel = per_channel
        size = channels if per_channel else 1
        self.n = np.zeros(size)
        self.s = np.zeros(size)
        self.ss = np.zeros(size)
        self.channels = channels
        self._shift: np.ndarray | None = None  # first chunk mean, for numerically stable sums

    def update(self, segment: Any) -> None:
        for x in _chunks(segment):
            axes = (0, 2, 3) if self.per_channel else (0, 1, 2, 3)
            if self._shift is None:
                self._shift = x.mean(axis=axes)
            d = x - (self._shift[None, :, None, None] if self.per_channel else self._shift)
            self.n += x.size / (self.channels if self.per_channel else 1)
            self.s += d.sum(axis=axes)
            self.ss += np.square(d).sum(axis=axes)

    def result(self, what: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, std)`` as float64 tensors of shape ``(C,)`` (a pooled value is repeated)."""
        if self._shift is None or (self.n == 0).any():
            raise ValueError(f"{what}: no training data to compute normalisation statistics from")
        m = self.s / self.n
        mean = self._shift + m
        var = np.maximum(self.ss / self.n - m * m, 0.0)
        std = np.sqrt(var)
        if (std == 0).any() or not np.isfinite(std).all():
            warnings.warn(f"{what}: training data has zero variance (constant); using std = 1", stacklevel=3)
            std = np.where((std == 0) | ~np.isfinite(std), 1.0, std)
        mean = np.broadcast_to(mean, (self.channels,)).copy()
        std = np.broadcast_to(std, (self.channels,)).copy()
        return torch.from_numpy(mean), torch.from_numpy(std)


def train_stats(segments: Sequence[Any], per_channel: bool, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Z-score statistics of training ``segments`` ``(T, C, H, W)``: ``(mean, std)`` of shape ``(C,)``."""
    if not segments:
        raise ValueError(f"{what}: no training data to compute normalisation statistics from")
    rs = RunningStats(segments[0].shape[1], per_channel)
    for seg in segments:
        rs.update(seg)
    return rs.result(what)


def check_stats(stats: Any, channels: int, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate user-supplied ``(mean, std)``: scalars or ``(C,)`` each, finite, std > 0."""
    try:
        mean, std = stats
    except (TypeError, ValueError):
        raise ValueError(f"{what}: stats must be a (mean, std) pair, got {stats!r}") from None
    out = []
    for name, v in (("mean", mean), ("std", std)):
        t = torch.as_tensor(v, dtype=torch.float64).flatten()
        if t.numel() == 1:
            t = t.expand(channels).clone()
        if t.numel() != channels or not bool(torch.isfinite(t).all()):
            raise ValueError(f"{what}: stats {name} must be finite, a scalar or {channels} values, got {v!r}")
        out.append(t)
    if bool((out[1] <= 0).any()):
        raise ValueError(f"{what}: stats std must be > 0, got {std!r}")
    return out[0], out[1]


# ----------------------------------------------------------------------------- the dataset
class WindowDataset(Dataset):
    """``(x, y)`` sliding windows over segments ``(T, C, H, W)``, z-scored with given stats.

    ``x``: frames ``s, s+step, ..., s+(T_in-1)*step``; ``y``: the next ``T_out`` frames at the
    same spacing; both float32 ``(T, C, H, W)``. Window starts advance by ``stride`` inside each
    segment (``stride=None``: only the first window of each segment, e.g. one per trajectory).
    """

    def __init__(
        self,
        segments: Sequence[Any],
        *,
        input_frames: int,
        output_frames: int,
        mean: torch.Tensor,
        std: torch.Tensor,
        split: str,
        stride: int | None = 1,
        step: int = 1,
        name: str = "dataset",
    ):
        super().__init__()
        self.name = name
        self.split = check_split(split, name)
        self.input_frames = check_positive_int(input_frames, "input_frames", name)
        self.out_frames = check_positive_int(output_frames, "output_frames", name)
        self.step = check_positive_int(step, "step", name)
        self.stride = None if stride is None else check_positive_int(stride, "stride", name)
        self.segments = [s for s in segments if s.shape[0] > 0]
        if not self.segments:
            raise ValueError(f"{name}: the {split} split is empty")
        shapes = {tuple(s.shape[1:]) for s in self.segments}
        if len(shapes) != 1 or len(next(iter(shapes))) != 3:
            raise ValueError(f"{name}: segments must all be (T, C, H, W) with one (C, H, W), got {sorted(shapes)}")
        self.frame_shape: tuple[int, int, int] = next(iter(shapes))
        C = self.frame_shape[0]
        self.mean = torch.as_tensor(mean, dtype=torch.float64).reshape(-1).expand(C).clone()
        self.std = torch.as_tensor(std, dtype=torch.float64).reshape(-1).expand(C).clone()
        self._mean32 = self.mean.float().view(1, C, 1, 1)
        self._std32 = self.std.float().view(1, C, 1, 1)
        span = (self.input_frames + self.out_frames - 1) * self.step + 1
        self.window_span = span
        index = []
        for i, seg in enumerate(self.segments):
            last = seg.shape[0] - span  # last valid start
            if last < 0:
                continue
            starts = np.arange(0, last + 1, self.stride) if self.stride else np.zeros(1, dtype=np.int64)
            index.append(np.stack([np.full_like(starts, i), starts], axis=1))
        if not index:
            longest = max(s.shape[0] for s in self.segments)
            raise ValueError(
                f"{name}: the {split} split is too short for one window: a window spans {span} frames "
                f"(input_frames={self.input_frames}, output_frames={self.out_frames}, step={self.step}) "
                f"but the longest contiguous series has {longest}"
            )
        self._index = np.concatenate(index).astype(np.int64)

    # -- shapes
    @property
    def in_shape(self) -> tuple[int, int, int, int]:
        """``(T_in, C, H, W)`` of ``x``, as the models' ``in_shape`` expects."""
        return (self.input_frames, *self.frame_shape)

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self._index)
        if idx < 0:
            idx += n
        if not 0 <= idx < n:
            raise IndexError(f"{self.name}: index {idx} out of range for {n} windows")
        seg_i, start = self._index[idx]
        seg = self.segments[seg_i]
        frames = np.array(seg[start : start + self.window_span : self.step], dtype=np.float32)  # own writable copy
        w = (torch.from_numpy(frames) - self._mean32) / self._std32
        return w[: self.input_frames], w[self.input_frames :]

    # -- normalisation
    def _stats_for(self, t: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
        C = self.frame_shape[0]
        if t.dim() < 3 or t.shape[-3] != C:
            raise ValueError(f"{self.name}.{what}: expected a tensor (..., {C}, H, W), got shape {tuple(t.shape)}")
        dtype = t.dtype if t.is_floating_point() else torch.float32
        shape = (C, 1, 1)
        return self.mean.to(t.device, dtype).view(shape), self.std.to(t.device, dtype).view(shape)

    def denormalize(self, tensor: torch.Tensor) -> torch.Tensor:
        """Back to physical units: ``tensor * std + mean`` for ``(..., C, H, W)`` tensors."""
        tensor = torch.as_tensor(tensor)
        mean, std = self._stats_for(tensor, "denormalize")
        return tensor * std + mean

    def normalize(self, tensor: torch.Tensor) -> torch.Tensor:
        """Physical units to model units: ``(tensor - mean) / std`` for ``(..., C, H, W)``."""
        tensor = torch.as_tensor(tensor)
        mean, std = self._stats_for(tensor, "normalize")
        return (tensor - mean) / std

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(split={self.split!r}, windows={len(self)}, in_shape={self.in_shape}, "
            f"out_frames={self.out_frames}, segments={len(self.segments)})"
        )


def gap_segments(keys: np.ndarray, spacing: int = 1) -> list[tuple[int, int]]:
    """``[start, stop)`` runs of ``keys`` (integer time stamps) that advance by exactly ``spacing``."""
    keys = np.asarray(keys, dtype=np.int64)
    if keys.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(keys) != spacing) + 1
    edges = [0, *breaks.tolist(), keys.size]
    return list(zip(edges[:-1], edges[1:]))


def segments_from_rows(
    source: Any,
    *,
    trajectories: bool,
    add_channel: bool,
    split: str,
    splits: SplitSpec,
    per_channel: bool,
    stats: Any,
    what: str,
    shuffle: bool = False,
    seed: int = 42,
) -> tuple[list[Any], torch.Tensor, torch.Tensor]:
    """Split an array source by its leading axis and return ``(segments, mean, std)``.

    ``source`` has ``shape``, ``dtype`` and ``read(a, b)`` (rows ``a:b``). Rows are time steps of
    one series ``(T, [C,] H, W)`` (``trajectories=False``; each split is one contiguous block) or
    independent trajectories ``(N, T, [C,] H, W)`` (each row becomes a segment; ``shuffle``
    permutes them with ``seed`` before splitting). ``add_channel`` inserts the missing ``C = 1``.
    Statistics come from the train rows unless ``stats`` gives them; NaN/Inf raise.
    """
    n = source.shape[0]
    ranges = resolve_splits(n, splits, what)
    a, b = ranges[split]
    if b <= a:
        raise ValueError(f"{what}: the {split} split is empty ({n} rows, splits={splits!r})")
    order = None
    if shuffle:
        if not trajectories:
            raise ValueError(f"{what}: shuffle=True needs independent trajectories (N, T, C, H, W), not one series")
        order = np.random.default_rng(seed).permutation(n)

    def load(lo: int, hi: int) -> list[Any]:
        if order is None:
            block = source.read(lo, hi)
        else:  # gather the permuted rows (sorted reads keep memory maps happy)
            rows = np.sort(order[lo:hi])
            block = np.stack([np.asarray(source.read(int(r), int(r) + 1))[0] for r in rows])
        if add_channel:
            block = block[:, None] if not trajectories else block[:, :, None]
        return list(block) if trajectories else [block]

    segments = load(a, b)
    check_finite(segments, what)
    C = segments[0].shape[-3]
    if stats is not None:
        mean, std = check_stats(stats, C, what)
    else:
        train = segments if split == "train" else load(*ranges["train"])
        if split != "train":
            check_finite(train, what + " (train split)")
        mean, std = train_stats(train, per_channel, what)
    return segments, mean, std
