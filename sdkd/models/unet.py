"""U-Net student: 4 levels with symmetric skips on time-folded frames and a direct readout head.

The input ``(B, T_in, C, H, W)`` is folded to ``(B, T_in*C, H, W)``, padded to a multiple of
``2**(levels-1)``, run through the encoder-decoder and read out as ``T_out*C`` channels, so
``T_out != T_in`` needs no rollout. Widths stay modest (16-32-64-128) so the student is a small
fraction of the teacher's size and cost (DESIGN.md §4).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ._common import check_input, crop_to, pad_to_multiple
from .registry import init_keys, register_model

_ACTS = {"silu": nn.SiLU, "gelu": nn.GELU, "relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.1)}


def make_norm(kind: str, channels: int) -> nn.Module:
    """``"group"`` (GroupNorm, up to 8 groups dividing ``channels``), ``"batch"`` or ``"none"``."""
    if kind == "group":
        groups = max(g for g in range(1, 9) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be 'group', 'batch' or 'none', got {kind!r}")


def make_act(kind: str) -> nn.Module:
    if kind not in _ACTS:
        raise ValueError(f"act must be one of {sorted(_ACTS)}, got {kind!r}")
    return _ACTS[kind]()


def conv_norm_act(cin: int, cout: int, norm: str, act: str, stride: int = 1) -> nn.Sequential:
    """3x3 conv (no bias when a norm follows) + norm + activation."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=norm == "none"), make_norm(norm, cout), make_act(act)
    )


class DoubleConv(nn.Sequential):
    """Two ``conv_norm_act`` layers: the per-level block of the U-Net."""

    def __init__(self, cin: int, cout: int, norm: str, act: str):
        super().__init__(conv_norm_act(cin, cout, norm, act), conv_norm_act(cout, cout, norm, act))


def _check_widths(widths: Sequence[int], name: str = "widths") -> tuple[int, ...]:
    widths = tuple(int(w) for w in widths)
    if len(widths) < 1 or any(w <= 0 for w in widths):
        raise ValueError(f"{name} must be a non-empty sequence of positive ints, got {widths}")
    return widths


class UNet(nn.Module):
    """U-Net forecaster ``(B, T_in, C, H, W) -> (B, T_out, C, H, W)``.

    Level ``i`` runs at resolution ``H/2**i`` with ``widths[i]`` channels; down-sampling is a 2x2
    max-pool, up-sampling a 2x2 transposed conv whose output is concatenated with the encoder skip.
    ``residual=True`` adds the last input frame to every output frame (persistence baseline).
    Features (at the padded resolution): ``enc0..enc{L-2}``, ``enc`` (bottleneck), ``dec{L-2}..dec0``.
    """

    def __init__(
        self,
        in_shape: tuple[int, int, int, int],
        out_frames: int,
        widths: Sequence[int] = (16, 32, 64, 128),
        norm: str = "group",
        act: str = "silu",
        residual: bool = False,
        pad_mode: str = "replicate",
    ):
        super().__init__()
        self.in_shape = tuple(in_shape)
        self.out_frames = int(out_frames)
        self.widths = _check_widths(widths)
        self.residual = bool(residual)
        self.pad_mode = pad_mode
        T, C = self.in_shape[:2]
        self.multiple = 2 ** (len(self.widths) - 1)

        self.down = nn.ModuleList()
        cin = T * C
        for w in self.widths:
            self.down.append(DoubleConv(cin, w, norm, act))
            cin = w
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for w_lo, w_hi in zip(reversed(self.widths[:-1]), reversed(self.widths[1:])):
            self.up.append(nn.ConvTranspose2d(w_hi, w_lo, 2, stride=2))
            self.dec.append(DoubleConv(2 * w_lo, w_lo, norm, act))
        self.head = nn.Conv2d(self.widths[0], self.out_frames * C, 1)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        check_input(x, self.in_shape, "unet")
        B, T, C = x.shape[:3]
        h, hw = pad_to_multiple(x.reshape(B, T * C, *x.shape[-2:]), self.multiple, self.pad_mode)
        feats: dict[str, torch.Tensor] = {}
        skips = []
        levels = len(self.down)
        for i, block in enumerate(self.down):
            h = block(h if i == 0 else self.pool(h))
            if i < levels - 1:
                skips.append(h)
                feats[f"enc{i}"] = h
        feats["enc"] = h
        for up, block in zip(self.up, self.dec):
            skip = skips.pop()
            h = block(torch.cat([up(h), skip], dim=1))
            feats[f"dec{len(skips)}"] = h
        y = crop_to(self.head(h), hw).reshape(B, self.out_frames, C, *hw)
        if self.residual:
            y = y + x[:, -1:]
        return (y, feats) if return_features else y


@register_model("unet", config_keys=init_keys(UNet))
def build_unet(in_shape: tuple[int, int, int, int], out_frames: int, **cfg) -> UNet:
    return UNet(in_shape, out_frames, **cfg)
