"""Visual Attention Network block (Guo et al. 2022), the translator block of SimVP's
``translator="van"`` (OpenSTL's ``model_type="van"``; the "single teacher (VAN)" of the paper's
Table 5).

Large-kernel attention (LKA) decomposes a 21x21 convolution into a 5x5 depth-wise conv, a 7x7
depth-wise conv with dilation 3 and a 1x1 conv, and *multiplies* the result with its input (no
sigmoid, unlike gSTA's gated attention). A VAN block is two pre-norm residual branches, each
BatchNorm -> branch -> layer scale -> drop path: the attention branch (1x1 conv, GELU, LKA, 1x1
conv, inner shortcut) and an MLP with a 3x3 depth-wise conv.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .layers import DropPath, MixMlp

__all__ = ["LargeKernelAttention", "VANAttention", "VANBlock"]


class LargeKernelAttention(nn.Module):
    """LKA: ``x * conv1x1(dwconv7x7_dilation3(dwconv5x5(x)))``, a 21x21 receptive field."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv0 = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.conv_spatial = nn.Conv2d(dim, dim, 7, padding=9, groups=dim, dilation=3)
        self.conv1 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv1(self.conv_spatial(self.conv0(x)))


class VANAttention(nn.Module):
    """1x1 conv -> GELU -> LKA -> 1x1 conv, plus the inner shortcut."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj_1 = nn.Conv2d(dim, dim, 1)
        self.act = nn.GELU()
        self.lka = LargeKernelAttention(dim)
        self.proj_2 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj_2(self.lka(self.act(self.proj_1(x))))


class VANBlock(nn.Module):
    """VAN block: ``x + dp(ls1 * attn(BN(x)))`` then ``x + dp(ls2 * mlp(BN(x)))``, layer scale
    initialised to ``init_value`` (0.01), convs initialised normal(0, sqrt(2 / fan_out)) as OpenSTL."""

    def __init__(
        self, dim: int, mlp_ratio: float = 4.0, drop: float = 0.0, drop_path: float = 0.0, init_value: float = 1e-2
    ):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = VANAttention(dim)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = MixMlp(dim, max(1, int(dim * mlp_ratio)), drop)  # the same MLP as gSTA's
        self.drop_path = DropPath(drop_path)
        self.layer_scale_1 = nn.Parameter(init_value * torch.ones(dim))
        self.layer_scale_2 = nn.Parameter(init_value * torch.ones(dim))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.layer_scale_1[:, None, None] * self.attn(self.norm1(x)))
        return x + self.drop_path(self.layer_scale_2[:, None, None] * self.mlp(self.norm2(x)))
