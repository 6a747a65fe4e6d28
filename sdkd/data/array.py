"""Generic loader for an array file (RBC and anything else): sliding windows with splits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._io import open_array
from .windows import SplitSpec, WindowDataset, check_numeric_dtype, check_split, segments_from_rows

LAYOUTS = {3: "(time, H, W)", 4: "(time, C, H, W)", 5: "(N, T, C, H, W)"}


class ArrayDataset(WindowDataset):
    """``(x, y)`` windows from one array file (``.npy .npz .pt .h5 .nc``).

    The array is ``(time, H, W)``, ``(time, C, H, W)`` (one long series: each split is a
    contiguous block of time, in order train/val/test, and windows never cross a split
    boundary) or ``(N, T, C, H, W)`` (independent trajectories: the splits take whole
    trajectories, in order, or permuted with ``seed`` when ``shuffle=True``).
    ``variable`` names the array inside ``.npz``, ``.h5``, ``.nc`` and dict ``.pt`` files
    (optional when the file holds one). ``.npy`` files are memory-mapped and ``.h5``/``.nc``
    read only the rows needed; ``.pt`` loads with ``torch.load(weights_only=True)``.

    ``splits``: three fractions or counts (train, val, test) or ``{"train": (start, stop), ...}``
    index ranges along the first axis. Windows are ``input_frames`` -> ``output_frames`` frames
    ``step`` apart, starting every ``stride`` frames. Z-score statistics come from the train
    split only: one scalar for all channels (``per_channel=False``, the default: the channels
    are one variable, e.g. velocity components) or one per channel; ``stats=(mean, std)``
    overrides them.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        variable: str | None = None,
        input_frames: int,
        output_frames: int,
        split: str = "train",
        stride: int = 1,
        step: int = 1,
        splits: SplitSpec = (0.8, 0.1, 0.1),
        per_channel: bool = False,
        shuffle: bool = False,
        seed: int = 42,
        stats: Any = None,
    ):
        where = f"ArrayDataset({Path(path).name})"
        check_split(split, where)
        source = open_array(path, variable, where)
        check_numeric_dtype(source.dtype, f"{where}: {source.path}")
        ndim = len(source.shape)
        if ndim not in LAYOUTS:
            raise ValueError(
                f"{where}: {source.path} holds an array of shape {source.shape}; expected "
                + ", ".join(LAYOUTS.values())
            )
        segments, mean, std = segments_from_rows(
            source,
            trajectories=ndim == 5,
            add_channel=ndim == 3,
            split=split,
            splits=splits,
            per_channel=per_channel,
            stats=stats,
            what=where,
            shuffle=shuffle,
            seed=seed,
        )
        self.path = source.path
        super().__init__(
            segments,
            input_frames=input_frames,
            output_frames=output_frames,
            mean=mean,
            std=std,
            split=split,
            stride=stride,
            step=step,
            name=where,
        )
