"""2-D Navier-Stokes (NSE) vorticity trajectories: FNO ``.mat`` files or in-memory arrays.

FNO stores ``u`` as ``(N, 64, 64, T)`` (MATLAB order, last axis time); v7.3 files are HDF5
with the axes reversed, which :func:`sdkd.data._io.read_mat` undoes. The built-in generator
(``sdkd.data.navier_stokes``) gives ``(N, T, H, W)`` arrays or memory-mapped ``.npy`` files.
Following the SDKD group's loaders, frames ``0..T_in-1`` are the input, the next ``T_out`` the
target, and trajectories are split 1000/100/100 in order (DESIGN.md section 3).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

from ._io import existing_file, read_mat
from .windows import SplitSpec, WindowDataset, as_numpy, check_numeric_dtype, check_split, segments_from_rows

Source = Union[str, Path, np.ndarray, torch.Tensor]


class _InMemory:
    """An array read by leading-axis ranges (the interface ``segments_from_rows`` expects)."""

    def __init__(self, array: np.ndarray):
        self.array = array
        self.shape = array.shape
        self.dtype = array.dtype

    def read(self, a: int, b: int) -> np.ndarray:
        return self.array[a:b]


def load_nse_array(source: Source, variable: str = "u", where: str = "NavierStokesDataset") -> np.ndarray:
    """Trajectories ``(N, T, H, W)`` or ``(N, T, C, H, W)`` from a ``.mat``/``.npy`` path or an array."""
    if isinstance(source, (str, Path)):
        p = existing_file(source, where)
        if p.suffix.lower() == ".mat":
            u = read_mat(p, variable, where)
            if u.ndim != 4:
                raise ValueError(f"{where}: {p}: variable {variable!r} must be (N, H, W, T), got shape {u.shape}")
            return np.moveaxis(u, -1, 1)  # (N, H, W, T) -> (N, T, H, W)
        if p.suffix.lower() == ".npy":
            try:
                arr = np.load(p, mmap_mode="r")
            except Exception as e:  # truncated or not an .npy file
                raise ValueError(f"{where}: cannot read {p} (truncated or not an .npy file): {e}") from e
        else:
            raise ValueError(f"{where}: unsupported file {p}; expected a FNO .mat file or an (N, T, H, W) .npy")
        where = f"{where}: {p}"
    elif isinstance(source, (np.ndarray, torch.Tensor)):
        arr = as_numpy(source)
    else:
        raise TypeError(f"{where}: source must be a path or an array (N, T, H, W), got {type(source).__name__}")
    if arr.ndim not in (4, 5):
        raise ValueError(f"{where}: expected trajectories (N, T, H, W) or (N, T, C, H, W), got shape {arr.shape}")
    return arr


class NavierStokesDataset(WindowDataset):
    """NSE windows ``x = u[:, 0:T_in]``, ``y = u[:, T_in:T_in+T_out]`` per trajectory.

    ``source``: a FNO ``.mat`` path (``variable`` inside, default ``"u"``), an ``(N, T, H, W)``
    ``.npy`` path (memory-mapped) or array/tensor ``(N, T, H, W)`` / ``(N, T, C, H, W)``.
    ``splits``: trajectories per split, in order; default ``(1000, 100, 100)`` when N >= 1200,
    else fractions ``(0.8, 0.1, 0.1)``. ``stride=None`` (default) takes one window per
    trajectory starting at frame 0 (FNO's setting); an int slides windows along each trajectory.
    One scalar mean/std from the train trajectories (``stats=(mean, std)`` overrides).
    """

    def __init__(
        self,
        source: Source,
        split: str = "train",
        input_frames: int = 10,
        output_frames: int = 10,
        splits: SplitSpec | None = None,
        *,
        variable: str = "u",
        stride: int | None = None,
        stats: Any = None,
    ):
        where = "NavierStokesDataset"
        check_split(split, where)
        arr = load_nse_array(source, variable, where)
        check_numeric_dtype(arr.dtype, f"{where}: {variable!r}")
        if splits is None:
            splits = (1000, 100, 100) if arr.shape[0] >= 1200 else (0.8, 0.1, 0.1)
        segments, mean, std = segments_from_rows(
            _InMemory(arr),
            trajectories=True,
            add_channel=arr.ndim == 4,
            split=split,
            splits=splits,
            per_channel=False,
            stats=stats,
            what=where,
        )
        super().__init__(
            segments,
            input_frames=input_frames,
            output_frames=output_frames,
            mean=mean,
            std=std,
            split=split,
            stride=stride,
            name=where,
        )
