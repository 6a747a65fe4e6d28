"""TaxiBJ crowd flows: DeepST's ``BJ1x_M32x32_T30_InOut.h5`` files, half-hour slots, and the
paper's TaxiBJ+ (the same layout on a 128 x 128 grid).

Each file holds ``data`` ``(slots, 2, H, W)`` (channel 0 inflow, 1 outflow) and ``date``
``(slots,)`` byte strings ``YYYYMMDDss`` (ss = 01..48); any grid size is read (32 x 32 for TaxiBJ,
128 x 128 for TaxiBJ+). Windows only span consecutive frames, so missing slots or days never leak
into a sample. ``interval="day"`` (TaxiBJ+ as in the paper's Table 2, "1 day") turns the series
into daily totals: each complete day's 48 half-hour frames summed (a day missing any slot is
dropped, as DeepST drops incomplete days); ``interval="30min"`` (default; the paper's text,
"every 30 minutes") keeps the half-hour slots. Normalisation is the
z-score of DESIGN.md section 3 with training statistics (one scalar for both channels by
default); note that DeepST itself min-max scaled to [-1, 1] with the training min/max, and
OpenSTL's pre-windowed ``dataset.npz`` to [0, 1], so their losses are not in the same units.
The default split keeps DeepST's test set (the last 28 days), takes the 28 days before it as
validation and the rest as training.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np

from ._io import existing_file
from .windows import (
    SplitSpec,
    WindowDataset,
    check_finite,
    check_numeric_dtype,
    check_positive_int,
    check_split,
    check_stats,
    resolve_splits,
    train_stats,
)

SLOTS_PER_DAY = 48
INTERVALS = ("30min", "day")
WHERE = "TaxiBJDataset"
Paths = Union[str, Path, Sequence[Union[str, Path]]]


def parse_dates(raw: np.ndarray, path: Path) -> np.ndarray:
    """``YYYYMMDDss`` strings -> absolute half-hour slot numbers (days since 1970 * 48 + ss - 1)."""
    out = np.empty(len(raw), dtype=np.int64)
    for i, d in enumerate(raw):
        s = d.decode("ascii", "replace") if isinstance(d, (bytes, np.bytes_)) else str(d)
        try:
            if len(s) != 10 or not s.isdigit():
                raise ValueError
            day = np.datetime64(f"{s[:4]}-{s[4:6]}-{s[6:8]}", "D").astype(np.int64)
            slot = int(s[8:])
            if not 1 <= slot <= SLOTS_PER_DAY:
                raise ValueError
        except ValueError:
            raise ValueError(f"{WHERE}: {path}: date[{i}] = {s!r} is not YYYYMMDDss with ss in 01..48") from None
        out[i] = day * SLOTS_PER_DAY + slot - 1
    return out


def find_files(paths: Paths) -> list[Path]:
    """A directory (all ``*.h5`` in it), one file, or a list of files."""
    if isinstance(paths, (str, Path)):
        p = Path(paths).expanduser()
        if p.is_dir():
            files = sorted(p.glob("*.h5"))
            if not files:
                raise FileNotFoundError(f"{WHERE}: no .h5 files in {p}")
            return files
        return [existing_file(p, WHERE)]
    files = [existing_file(p, WHERE) for p in paths]
    if not files:
        raise ValueError(f"{WHERE}: paths is an empty list")
    return files


def read_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``data`` as float32 ``(slots, C, H, W)`` and its slot numbers."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            for key in ("data", "date"):
                if key not in f:
                    raise KeyError(f"{WHERE}: {path} has no {key!r} dataset; found {sorted(f.keys())}")
            data, date = f["data"], f["date"]
            if data.ndim != 4:
                raise ValueError(f"{WHERE}: {path}: 'data' must be (slots, 2, H, W), got shape {data.shape}")
            if date.shape != (data.shape[0],):
                raise ValueError(f"{WHERE}: {path}: 'date' shape {date.shape} does not match {data.shape[0]} slots")
            check_numeric_dtype(data.dtype, f"{WHERE}: {path}: 'data'")
            values = np.asarray(data[()], dtype=np.float32)
            raw = date[()]
    except (KeyError, ValueError, TypeError):
        raise
    except Exception as e:  # truncated or not HDF5
        raise ValueError(f"{WHERE}: cannot read {path} (truncated or not HDF5): {type(e).__name__}: {e}") from e
    return values, parse_dates(raw, path)


def runs(rows: np.ndarray, keys: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` runs of consecutive ``rows`` whose slot keys advance by exactly 1."""
    if rows.size == 0:
        return []
    ok = (np.diff(rows) == 1) & (np.diff(keys[rows]) == 1)
    breaks = np.flatnonzero(~ok) + 1
    edges = [0, *breaks.tolist(), rows.size]
    return [(int(rows[a]), int(rows[b - 1]) + 1) for a, b in zip(edges[:-1], edges[1:])]


def daily_totals(data: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum the 48 half-hour frames of every complete day: ``(days, C, H, W)`` and the day numbers
    (days since 1970). A day with any slot missing (or repeated) is left out."""
    day = keys // SLOTS_PER_DAY
    out, kept = [], []
    for d in np.unique(day):
        rows = np.flatnonzero(day == d)
        if np.array_equal(np.sort(keys[rows] % SLOTS_PER_DAY), np.arange(SLOTS_PER_DAY)):
            out.append(data[rows].sum(axis=0, dtype=np.float64).astype(np.float32))
            kept.append(d)
    if not out:
        raise ValueError(f"{WHERE}: interval='day' needs at least one complete day of {SLOTS_PER_DAY} slots")
    return np.stack(out), np.asarray(kept, dtype=np.int64)


class TaxiBJDataset(WindowDataset):
    """TaxiBJ (or TaxiBJ+) inflow/outflow windows ``(T, 2, H, W)``.

    ``paths``: a folder of ``.h5`` files, one file or a list (concatenated in time order).
    ``splits``: ``None`` (default) holds out the last ``test_days`` days as test and the
    ``val_days`` days before them as validation (DeepST's test set is the last 28 days);
    otherwise fractions/counts/ranges over slots in time order (see ``resolve_splits``).
    ``per_channel``: separate statistics for inflow and outflow (default one scalar).
    ``interval``: ``"30min"`` (the files' half-hour slots) or ``"day"`` (daily totals, TaxiBJ+ in
    Table 2); with ``"day"`` the splits and windows count days.
    """

    def __init__(
        self,
        paths: Paths,
        split: str = "train",
        input_frames: int = 4,
        output_frames: int = 4,
        *,
        splits: SplitSpec | None = None,
        test_days: int = 28,
        val_days: int = 28,
        stride: int = 1,
        per_channel: bool = False,
        stats: Any = None,
        interval: str = "30min",
    ):
        check_split(split, WHERE)
        if interval not in INTERVALS:
            raise ValueError(f"{WHERE}: interval must be one of {INTERVALS}, got {interval!r}")
        self.files = find_files(paths)
        parts = [read_file(p) for p in self.files]
        parts.sort(key=lambda dk: int(dk[1][0]) if dk[1].size else 0)
        shapes = {d.shape[1:] for d, _ in parts}
        if len(shapes) != 1:
            raise ValueError(f"{WHERE}: files have different (C, H, W) shapes: {sorted(shapes)}")
        data = np.concatenate([d for d, _ in parts]) if len(parts) > 1 else parts[0][0]
        keys = np.concatenate([k for _, k in parts])
        per_day = SLOTS_PER_DAY
        if interval == "day":
            data, keys = daily_totals(data, keys)
            per_day = 1
        self.interval = interval
        n = len(keys)
        if splits is None:
            check_positive_int(test_days, "test_days", WHERE, minimum=0)
            check_positive_int(val_days, "val_days", WHERE, minimum=0)
            day = keys // per_day
            days = np.unique(day)
            if len(days) <= test_days + val_days:
                raise ValueError(
                    f"{WHERE}: only {len(days)} days of data; test_days={test_days} + val_days={val_days} leave no training days"
                )
            first_test = days[len(days) - test_days] if test_days else days[-1] + 1
            first_val = days[len(days) - test_days - val_days]
            label = np.where(day >= first_test, 2, np.where(day >= first_val, 1, 0))
        else:
            label = np.full(n, -1)
            for i, (a, b) in enumerate(resolve_splits(n, splits, WHERE).values()):
                label[a:b] = i
        masks = {s: np.flatnonzero(label == i) for i, s in enumerate(("train", "val", "test"))}
        if masks[split].size == 0:
            raise ValueError(f"{WHERE}: the {split} split is empty")
        segments = [data[a:b] for a, b in runs(masks[split], keys)]
        self.slot_keys = keys[masks[split]]
        check_finite(segments, WHERE)
        if stats is not None:
            mean, std = check_stats(stats, data.shape[1], WHERE)
        else:
            train = segments if split == "train" else [data[a:b] for a, b in runs(masks["train"], keys)]
            if split != "train":
                check_finite(train, f"{WHERE} (train split)")
            mean, std = train_stats(train, per_channel, WHERE)
        super().__init__(
            segments,
            input_frames=input_frames,
            output_frames=output_frames,
            mean=mean,
            std=std,
            split=split,
            stride=stride,
            name=WHERE,
        )
