"""MLP-Mixer student (Tolstikhin et al., 2021) on time-folded frames.

The folded input ``(B, T_in*C, H, W)`` is padded to a multiple of ``p``, cut into ``p x p``
patches (one token of size ``T_in*C*p*p`` each), embedded linearly, mixed by pre-LN residual
token- and channel-MLPs, read out linearly to ``T_out*C*p*p`` per token and un-patchified
(REFERENCES.md §3, option (i)). Token mixing fixes the number of tokens, so a model is built for
one spatial size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._common import check_input, crop_to, pad_to_multiple
from .registry import init_keys, register_model


def default_patch_size(hw: tuple[int, int], max_tokens: int = 256) -> int:
    """Smallest patch in (2, 4, 8, 16, ...) giving at most ``max_tokens`` tokens for an ``H x W`` field."""
    p = 2
    while math.ceil(hw[0] / p) * math.ceil(hw[1] / p) > max_tokens and p < max(hw):
        p *= 2
    return p


class Mlp(nn.Sequential):
    def __init__(self, dim: int, hidden: int):
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class MixerBlock(nn.Module):
    """``x + TokenMLP(LN(x))`` over tokens, then ``x + ChannelMLP(LN(x))`` over channels."""

    def __init__(self, tokens: int, dim: int, token_hidden: int, channel_hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.token_mlp = Mlp(tokens, token_hidden)
        self.norm2 = nn.LayerNorm(dim)
        self.channel_mlp = Mlp(dim, channel_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, D)
        x = x + self.token_mlp(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mlp(self.norm2(x))


class MLPMixer(nn.Module):
    """MLP-Mixer forecaster ``(B, T_in, C, H, W) -> (B, T_out, C, H, W)``.

    ``patch_size=None`` picks the smallest power of two giving at most 256 tokens. Token MLPs have
    ``int(mlp_ratio[0]*dim)`` hidden units, channel MLPs ``int(mlp_ratio[1]*dim)`` (timm's convention).
    Features, as maps ``(B, dim, H/p, W/p)``: ``embed``, ``block0..block{depth-1}``, ``enc`` (after the final norm).
    """

    def __init__(
        self,
        in_shape: tuple[int, int, int, int],
        out_frames: int,
        patch_size: int | None = None,
        dim: int = 96,
        depth: int = 6,
        mlp_ratio: tuple[float, float] = (0.5, 4.0),
        residual: bool = False,
        pad_mode: str = "replicate",
    ):
        super().__init__()
        self.in_shape = tuple(in_shape)
        self.out_frames = int(out_frames)
        T, C, H, W = self.in_shape
        p = default_patch_size((H, W)) if patch_size is None else int(patch_size)
        if p <= 0 or int(dim) <= 0 or int(depth) <= 0:
            raise ValueError(f"patch_size, dim and depth must be positive, got {p}, {dim}, {depth}")
        self.patch_size, self.dim, self.residual, self.pad_mode = p, int(dim), bool(residual), pad_mode
        self.grid = (math.ceil(H / p), math.ceil(W / p))
        tokens = self.grid[0] * self.grid[1]
        self.embed = nn.Conv2d(T * C, self.dim, p, stride=p)  # == a linear map of each flattened patch
        hidden = (int(mlp_ratio[0] * self.dim), int(mlp_ratio[1] * self.dim))
        self.blocks = nn.ModuleList(MixerBlock(tokens, self.dim, *hidden) for _ in range(int(depth)))
        self.norm = nn.LayerNorm(self.dim)
        self.head = nn.Linear(self.dim, self.out_frames * C * p * p)

    def _as_map(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens.transpose(1, 2).reshape(tokens.shape[0], self.dim, *self.grid)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        check_input(x, self.in_shape, "mixer")
        B, T, C = x.shape[:3]
        h, hw = pad_to_multiple(x.reshape(B, T * C, *x.shape[-2:]), self.patch_size, self.pad_mode)
        h = self.embed(h).flatten(2).transpose(1, 2)  # (B, N, D)
        feats: dict[str, torch.Tensor] = {"embed": h}
        for i, block in enumerate(self.blocks):
            h = block(h)
            feats[f"block{i}"] = h
        h = self.norm(h)
        feats["enc"] = h
        y = self.head(h).transpose(1, 2).reshape(B, -1, self.grid[0] * self.grid[1])  # (B, T_out*C*p*p, N)
        y = F.fold(
            y,
            output_size=(self.grid[0] * self.patch_size, self.grid[1] * self.patch_size),
            kernel_size=self.patch_size,
            stride=self.patch_size,
        )
        y = crop_to(y, hw).reshape(B, self.out_frames, C, *hw)
        if self.residual:
            y = y + x[:, -1:]
        if not return_features:
            return y
        return y, {k: self._as_map(v) for k, v in feats.items()}


@register_model("mixer", config_keys=init_keys(MLPMixer))
def build_mixer(in_shape: tuple[int, int, int, int], out_frames: int, **cfg) -> MLPMixer:
    return MLPMixer(in_shape, out_frames, **cfg)
