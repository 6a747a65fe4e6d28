"""ST-AlterNet (teacher T1, DESIGN.md section 4): SimVP-style encoder/decoder around a latent
evolver that splits high frequencies (local conv) from low frequencies (global MHSA).

``mode="parallel"`` (eqs. 3-7): ``Z_h = GELU(Conv_KxK(Z))``, ``Z_l = Z + MHSA(Z)``,
``Z <- LayerNorm(Z_h + Z_l)`` (the fused ``sdkd.ops.attention`` op), then ``Z <- Z + MLP(Z)``.
``mode="serial"`` (AlterNet-style): ``Z <- Z + GELU(Conv_KxK(Z))``, ``Z <- LayerNorm(Z + MHSA(Z))``,
``Z <- Z + MLP(Z)``. Both expose each block's branch outputs as features ``block{i}.high`` /
``block{i}.low`` (``Z_h`` and ``Z + MHSA(Z)``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from .layers import DropPath, FusedAttentionBlock, LatentForecaster, sincos_2d
from .registry import register_model

__all__ = ["STAlterNet", "STAlterNetConfig", "EvolutionBlock"]

MODES = ("parallel", "serial")


@dataclass
class STAlterNetConfig:
    """Hyper-parameters; ``STAlterNetConfig.for_shape`` gives the defaults for an input shape.

    ``hid_S``: per-frame encoder width; ``hid_T``: latent width (tokens' d_model);
    ``N_S``: encoder/decoder layers (strides 1, 2, 1, 2, ...); ``N_T``: evolution blocks;
    ``kernel_size``: K of the high-frequency conv; ``mlp_ratio``: conv-MLP expansion.
    """

    hid_S: int = 32
    hid_T: int = 256
    N_S: int = 4
    N_T: int = 4
    num_heads: int = 8
    kernel_size: int = 3
    mlp_ratio: float = 2.0
    mode: str = "parallel"
    spatio_kernel: int = 3
    drop_path: float = 0.0
    attn_eps: float = 1e-5
    attn_backend: str = "auto"

    @classmethod
    def for_shape(cls, in_shape: tuple[int, int, int, int], **overrides) -> STAlterNetConfig:
        """Defaults for ``in_shape=(T_in, C, H, W)``: two down-samplings (N_S=4) from 64 pixels on
        the short side, one (N_S=2) below; ``overrides`` replace any field."""
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - valid)
        if unknown:
            raise TypeError(f"st_alternet: unknown config key(s) {unknown}; valid keys: {sorted(valid)}")
        H, W = in_shape[-2:]
        base = {"N_S": 4 if min(H, W) >= 64 else 2}
        base.update(overrides)
        cfg = cls(**base)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        for name in ("hid_S", "hid_T", "N_S", "N_T", "num_heads", "kernel_size", "spatio_kernel"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"st_alternet: {name} must be a positive int, got {v!r}")
        if self.mode not in MODES:
            raise ValueError(f"st_alternet: mode must be one of {MODES}, got {self.mode!r}")
        if self.hid_T % self.num_heads:
            raise ValueError(f"st_alternet: num_heads={self.num_heads} must divide hid_T={self.hid_T}")
        if self.hid_T % 4:
            raise ValueError(f"st_alternet: hid_T must be a multiple of 4 (2-D position encoding), got {self.hid_T}")
        if self.kernel_size % 2 == 0 or self.spatio_kernel % 2 == 0:
            raise ValueError("st_alternet: kernel_size and spatio_kernel must be odd")
        if not self.mlp_ratio > 0:
            raise ValueError(f"st_alternet: mlp_ratio must be > 0, got {self.mlp_ratio}")
        if not 0.0 <= self.drop_path < 1.0:
            raise ValueError(f"st_alternet: drop_path must be in [0, 1), got {self.drop_path}")


def _to_tokens(z: torch.Tensor) -> torch.Tensor:
    return z.flatten(2).transpose(1, 2)  # (B, D, h, w) -> (B, h*w, D)


def _to_map(t: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], *hw)


class ConvMlp(nn.Module):
    """Position-wise MLP as 1x1 convs: dim -> hidden -> dim with GELU."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class EvolutionBlock(nn.Module):
    """One latent evolution block on (B, dim, h, w); ``mode`` as in the module docstring."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        kernel_size: int = 3,
        mlp_ratio: float = 2.0,
        mode: str = "parallel",
        drop_path: float = 0.0,
        attn_eps: float = 1e-5,
        attn_backend: str = "auto",
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"EvolutionBlock: mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.conv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2)
        self.act = nn.GELU()
        self.attn = FusedAttentionBlock(dim, num_heads, eps=attn_eps, backend=attn_backend)
        self.mlp = ConvMlp(dim, max(1, round(dim * mlp_ratio)))
        self.drop_path = DropPath(drop_path)

    def forward(
        self, z: torch.Tensor, feats: dict[str, torch.Tensor] | None = None, prefix: str = "block"
    ) -> torch.Tensor:
        hw = z.shape[-2:]
        z_h = self.act(self.conv(z))
        if self.mode == "parallel":
            tok, tok_h = _to_tokens(z), _to_tokens(z_h)
        else:  # serial: residual conv block, then residual MHSA block on its output
            z_h = z + z_h
            tok, tok_h = _to_tokens(z_h), None
        if feats is None:
            out = self.attn(tok, tok_h)
        else:
            out, z_l = self.attn(tok, tok_h, return_low=True)
            feats[f"{prefix}.high"] = z_h
            feats[f"{prefix}.low"] = _to_map(z_l, hw)
        z = _to_map(out, hw)
        return z + self.drop_path(self.mlp(z))


class STAlterNet(LatentForecaster):
    """ST-AlterNet: ``(B, T_in, C, H, W) -> (B, T_out, C, H, W)``.

    Encoder (N_S ConvSC, shared over frames) -> time folded into channels -> 1x1 projection to
    ``hid_T`` + fixed 2-D sinusoidal position encoding -> N_T ``EvolutionBlock`` -> 1x1 readout to
    ``T_out*hid_S`` -> per-frame transposed-ConvSC decoder with the (time-mapped) skip from the first
    encoder layer. Inputs of any H, W are padded (replicate) to a multiple of 2^(down-samplings) and
    the output is cropped back. Features: ``enc``, ``block{i}``, ``block{i}.high``, ``block{i}.low``.
    """

    model_name = "st_alternet"

    def __init__(
        self,
        in_shape: tuple[int, int, int, int],
        out_frames: int | None = None,
        config: STAlterNetConfig | None = None,
        **overrides,
    ):
        super().__init__()
        if len(in_shape) != 4 or any(int(v) <= 0 for v in in_shape):
            raise ValueError(f"st_alternet: in_shape must be (T_in, C, H, W) of positive ints, got {in_shape}")
        in_shape = tuple(int(v) for v in in_shape)
        out_frames = in_shape[0] if out_frames is None else int(out_frames)
        if out_frames <= 0:
            raise ValueError(f"st_alternet: out_frames must be positive, got {out_frames}")
        if config is None:
            config = STAlterNetConfig.for_shape(in_shape, **overrides)
        elif overrides:
            config = STAlterNetConfig.for_shape(in_shape, **{**asdict(config), **overrides})
        else:
            config.validate()
        self.config = config
        c = config
        T = in_shape[0]
        self._build_skeleton(in_shape, out_frames, c.hid_S, c.N_S, c.spatio_kernel, upsample="transpose")
        self.proj = nn.Conv2d(T * c.hid_S, c.hid_T, 1)
        self.register_buffer("pos", sincos_2d(c.hid_T, *self.latent_hw), persistent=False)
        rates = torch.linspace(0, c.drop_path, c.N_T).tolist()
        self.blocks = nn.ModuleList(
            EvolutionBlock(
                c.hid_T, c.num_heads, c.kernel_size, c.mlp_ratio, c.mode, rates[i], c.attn_eps, c.attn_backend
            )
            for i in range(c.N_T)
        )
        self.readout = nn.Conv2d(c.hid_T, out_frames * c.hid_S, 1)

    def evolve(self, enc: torch.Tensor, feats: dict[str, torch.Tensor] | None) -> torch.Tensor:
        z = self.proj(enc) + self.pos.to(enc.dtype)
        for i, block in enumerate(self.blocks):
            z = block(z, feats, f"block{i}")
            if feats is not None:
                feats[f"block{i}"] = z
        return self.readout(z)

    def get_config(self) -> dict:
        """Plain-data config (for checkpoints): ``build_model("st_alternet", **this)`` rebuilds the model."""
        return {"in_shape": list(self.in_shape), "out_frames": self.out_frames, **asdict(self.config)}


@register_model("st_alternet", config_keys=[f.name for f in fields(STAlterNetConfig)])
def build_st_alternet(in_shape: tuple[int, int, int, int], out_frames: int | None = None, **cfg) -> STAlterNet:
    """Registry builder: the default ST-AlterNet for ``in_shape``; ``cfg`` overrides config fields."""
    return STAlterNet(in_shape, out_frames, **cfg)
