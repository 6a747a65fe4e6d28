"""Small pieces shared by the architectures: time folding and pad-to-multiple / crop-back."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def check_input(x: torch.Tensor, in_shape: tuple[int, int, int, int], model: str) -> None:
    """Raise a clear error when ``x`` is not ``(B, T_in, C, H, W)`` for this model."""
    if x.dim() != 5 or tuple(x.shape[1:]) != tuple(in_shape):
        raise ValueError(f"{model}: expected input (B, {', '.join(map(str, in_shape))}), got {tuple(x.shape)}")


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str = "replicate") -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad the last two dims of ``x`` up to multiples of ``multiple``; returns the original (H, W)."""
    H, W = x.shape[-2:]
    ph, pw = (-H) % multiple, (-W) % multiple
    if ph or pw:
        lead = x.shape[:-3]
        y = x.reshape(-1, *x.shape[-3:])
        y = F.pad(y, (0, pw, 0, ph), mode=mode)
        x = y.reshape(*lead, *y.shape[-3:])
    return x, (H, W)


def crop_to(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    return x[..., : hw[0], : hw[1]]
