"""ResNet student: stem conv + stages of residual basic blocks on time-folded frames.

Stages may down-sample (first block strided); the deepest features are then projected (1x1),
up-sampled back and added to the last full-resolution features before a 1x1 readout to ``T_out*C`` channels. With
``strides`` all 1 this is the group's original full-resolution ResNet (REFERENCES.md §3), scaled
down to the ≤ 1/5-of-teacher budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._common import check_input, crop_to, pad_to_multiple
from .registry import init_keys, register_model
from .unet import _check_widths, conv_norm_act, make_act, make_norm


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual shortcut (1x1 conv + norm when width or stride changes)."""

    def __init__(self, cin: int, cout: int, stride: int, norm: str, act: str):
        super().__init__()
        self.conv1 = conv_norm_act(cin, cout, norm, act, stride=stride)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=norm == "none")
        self.norm2 = make_norm(norm, cout)
        self.act = make_act(act)
        self.shortcut = (
            nn.Identity()
            if cin == cout and stride == 1
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=norm == "none"), make_norm(norm, cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm2(self.conv2(self.conv1(x))) + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet forecaster ``(B, T_in, C, H, W) -> (B, T_out, C, H, W)``.

    ``widths[i]``, ``depths[i]`` and ``strides[i]`` describe stage ``i``.
    Features: ``stem``, ``stage1..stageN`` and ``enc`` (the last stage), at the padded resolution.
    """

    def __init__(
        self,
        in_shape: tuple[int, int, int, int],
        out_frames: int,
        widths: Sequence[int] = (32, 64, 96),
        depths: Sequence[int] = (3, 3, 3),
        strides: Sequence[int] = (1, 2, 2),
        norm: str = "group",
        act: str = "silu",
        residual: bool = False,
        pad_mode: str = "replicate",
    ):
        super().__init__()
        self.in_shape = tuple(in_shape)
        self.out_frames = int(out_frames)
        widths = _check_widths(widths)
        depths = _check_widths(depths, "depths")
        strides = _check_widths(strides, "strides")
        if not len(widths) == len(depths) == len(strides):
            raise ValueError(f"widths, depths and strides must have equal lengths, got {widths}, {depths}, {strides}")
        self.residual = bool(residual)
        self.pad_mode = pad_mode
        self.multiple = math.prod(strides)
        T, C = self.in_shape[:2]

        self.stem = conv_norm_act(T * C, widths[0], norm, act)
        self.stages = nn.ModuleList()
        cin, scale = widths[0], 1
        self.full_res_stage = 0  # number of leading stages that keep full resolution
        for i, (w, d, s) in enumerate(zip(widths, depths, strides)):
            blocks = [BasicBlock(cin if j == 0 else w, w, s if j == 0 else 1, norm, act) for j in range(d)]
            self.stages.append(nn.Sequential(*blocks))
            cin, scale = w, scale * s
            if scale == 1:
                self.full_res_stage = i + 1
        skip_w = self._skip_width(widths)
        self.up = (
            None
            if self.multiple == 1
            else nn.Sequential(nn.Conv2d(cin, skip_w, 1, bias=norm == "none"), make_norm(norm, skip_w), make_act(act))
        )
        self.head = nn.Conv2d(skip_w if self.up is not None else cin, self.out_frames * C, 1)

    def _skip_width(self, widths: tuple[int, ...]) -> int:
        return widths[self.full_res_stage - 1] if self.full_res_stage else widths[0]

    def forward(self, x: torch.Tensor, return_features: bool = False):
        check_input(x, self.in_shape, "resnet")
        B, T, C = x.shape[:3]
        h, hw = pad_to_multiple(x.reshape(B, T * C, *x.shape[-2:]), self.multiple, self.pad_mode)
        h = self.stem(h)
        feats: dict[str, torch.Tensor] = {"stem": h}
        skip = h
        for i, stage in enumerate(self.stages):
            h = stage(h)
            feats[f"stage{i + 1}"] = h
            if i < self.full_res_stage:
                skip = h
        feats["enc"] = h
        if self.up is not None:
            h = F.interpolate(self.up(h), size=skip.shape[-2:], mode="bilinear", align_corners=False) + skip
        y = crop_to(self.head(h), hw).reshape(B, self.out_frames, C, *hw)
        if self.residual:
            y = y + x[:, -1:]
        return (y, feats) if return_features else y


@register_model("resnet", config_keys=init_keys(ResNet))
def build_resnet(in_shape: tuple[int, int, int, int], out_frames: int, **cfg) -> ResNet:
    return ResNet(in_shape, out_frames, **cfg)
