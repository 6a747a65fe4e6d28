"""Validation of SpectralKD's radial ``cutoffs``: every band they make must hold at least one frequency bin.

A cutoff above every bin's radius (``cutoffs=0.8``: the largest radius of any grid is ``sqrt(0.5)``,
the corner ``(ky, kx) = (1/2, 1/2)``), a boolean (``cutoffs=True`` is 1.0) or two cutoffs with no bin
between them leave a band empty, and the loss silently becomes a re-weighted MSE. Two checks reject
them: :func:`as_cutoffs` (shape-free, at construction) and :func:`check_bands` (once the grid
``H x W`` is known; cached per grid, pure Python, so a training step pays a dictionary lookup and
reads nothing back from the device).

The band rule is the one of ``band_index``: band ``b`` holds the bins with ``c_{b-1} < r <= c_b``,
compared as squares in float64 with a relative tolerance of 1e-12 (a bin on a cutoff is low), where
``r^2 = (ky/H)^2 + (kx/W)^2`` with ``ky`` signed (fftfreq) and ``0 <= kx <= W//2`` (rfftfreq).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable
from functools import lru_cache

import numpy as np
import torch

#: the largest radial frequency of any grid (cycles per sample): a cutoff at or above it leaves the high band empty
MAX_RADIUS = math.sqrt(0.5)


def _one_cutoff(value: object, owner: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        kind = "a bool" if isinstance(value, (bool, np.bool_)) else type(value).__name__
        raise TypeError(f"{owner}: cutoffs must be numbers (cycles per sample, e.g. 0.25), got {value!r} ({kind})")
    return float(value)


def as_cutoffs(cutoffs: object, owner: str = "spectral_loss") -> tuple[float, ...]:
    """``cutoffs`` (one number or a sequence) as a tuple of floats, checked independently of the grid:
    numbers, not booleans; finite, ``>= 0`` and ``< sqrt(0.5)``; strictly increasing. Raises naming ``owner``.

    A cutoff of 0 is allowed: its low band is the mean (the DC bin) alone.
    """
    if type(cutoffs) is tuple and all(type(c) is float for c in cutoffs):  # SpectralKD's own: every step
        return _uncached_under_compile(_checked_floats)(cutoffs, owner)
    return _uncached_under_compile(_checked_floats)(_as_floats(cutoffs, owner), owner)


def _uncached_under_compile(fn: Callable) -> Callable:
    """``fn`` itself, or under torch.compile tracing its undecorated function: Dynamo warns on an ``lru_cache``
    wrapper (it would trace through it anyway), and these pure checks run once, at trace time."""
    return fn.__wrapped__ if torch.compiler.is_compiling() else fn


def _as_floats(cutoffs: object, owner: str) -> tuple[float, ...]:
    if isinstance(cutoffs, (str, bytes)):
        raise TypeError(f"{owner}: cutoffs must be numbers (cycles per sample, e.g. 0.25), got the string {cutoffs!r}")
    if hasattr(cutoffs, "tolist") and not isinstance(cutoffs, numbers.Real):  # a tensor or an array
        cutoffs = cutoffs.tolist()
    if isinstance(cutoffs, (numbers.Real, bool, np.bool_)):
        cuts = (_one_cutoff(cutoffs, owner),)
    elif isinstance(cutoffs, Iterable):
        cuts = tuple(_one_cutoff(c, owner) for c in cutoffs)
    else:
        raise TypeError(f"{owner}: cutoffs must be a number or a sequence of numbers, got {type(cutoffs).__name__}")
    return cuts


@lru_cache(maxsize=256)
def _checked_floats(cuts: tuple[float, ...], owner: str) -> tuple[float, ...]:
    if not cuts:
        raise ValueError(f"{owner}: cutoffs must hold at least one value")
    if any(not math.isfinite(c) or c < 0 or c >= MAX_RADIUS for c in cuts):
        raise ValueError(
            f"{owner}: cutoffs must be >= 0 and < sqrt(0.5) = {MAX_RADIUS:.4f} cycles per sample (no bin of any grid "
            f"lies beyond sqrt(0.5), so a larger cutoff leaves the high band empty), got {cuts}"
        )
    if any(b <= a for a, b in zip(cuts, cuts[1:])):
        raise ValueError(f"{owner}: cutoffs must be strictly increasing, got {cuts}")
    return cuts


def _count_at_most(ky2: float, W: int, threshold: float) -> int:
    """Bins ``0 <= kx <= W//2`` of one row with ``ky2 + (kx/W)^2 <= threshold`` (``r^2`` grows with ``kx``)."""
    lo, hi = 0, W // 2 + 1
    while lo < hi:
        mid = (lo + hi) // 2
        kx = mid / W
        if ky2 + kx * kx <= threshold:
            lo = mid + 1
        else:
            hi = mid
    return lo


@lru_cache(maxsize=256)
def band_bin_totals(H: int, W: int, cutoffs: tuple[float, ...]) -> tuple[int, ...]:
    """Number of rfft2 bins of an ``H x W`` grid in each band, as ``band_index`` assigns them (pure Python)."""
    thresholds = [c * c * (1 + 1e-12) for c in cutoffs]  # band_index's float64 rule: r^2 > c^2 (1 + 1e-12) is above c
    totals = [0] * (len(cutoffs) + 1)
    for k in range(H // 2 + 1):  # |ky| = k / H; rows k and H - k (k != 0, 2k != H) have the same radii
        rows = 1 if k == 0 or 2 * k == H else 2
        ky = k / H
        below = [_count_at_most(ky * ky, W, t) for t in thresholds]
        edges = [0, *below, W // 2 + 1]
        for b in range(len(totals)):
            totals[b] += rows * (edges[b + 1] - edges[b])
    return tuple(totals)


def _smallest_radius_above(H: int, W: int, threshold: float) -> float | None:
    """The smallest bin radius whose square exceeds ``threshold`` (None when no bin does)."""
    best = None
    for k in range(H // 2 + 1):
        ky = k / H
        i = _count_at_most(ky * ky, W, threshold)
        if i <= W // 2:
            r2 = ky * ky + (i / W) ** 2
            best = r2 if best is None else min(best, r2)
    return None if best is None else math.sqrt(best)


def check_bands(H: int, W: int, cutoffs: tuple[float, ...], owner: str = "spectral_loss") -> None:
    """Raise if a band of ``cutoffs`` (already through :func:`as_cutoffs`) holds no bin of an ``H x W`` grid."""
    totals = _uncached_under_compile(band_bin_totals)(int(H), int(W), tuple(cutoffs))
    if all(totals):
        return
    b = totals.index(0)
    lo = cutoffs[b - 1] if b > 0 else None
    hi = cutoffs[b] if b < len(cutoffs) else None
    span = f"{lo:g} < r <= {hi:g}" if lo is not None and hi is not None else (f"r > {lo:g}" if hi is None else "")
    nxt = _smallest_radius_above(int(H), int(W), lo * lo * (1 + 1e-12)) if lo is not None else None
    hint = f"the next bin radius above {lo:g} is {nxt:.4g}" if nxt is not None else "no bin lies above it"
    raise ValueError(
        f"{owner}: cutoffs {tuple(cutoffs)} leave band {b} ({span} cycles per sample) without any frequency bin "
        f"on a {H}x{W} grid ({hint}); choose cutoffs with at least one bin radius in every band"
    )
