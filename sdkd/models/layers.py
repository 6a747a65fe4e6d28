"""Building blocks shared by the teachers (and open to the students): SimVP's ``ConvSC`` encoder /
decoder, the 2-D sinusoidal position encoding, ``DropPath`` and ``FusedAttentionBlock``, the module
that holds the parameters of the ``sdkd.ops.attention`` op."""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from sdkd.ops.attention import attention, mhsa_reference

from ._common import check_input, crop_to, pad_to_multiple

__all__ = [
    "ConvSC",
    "DropPath",
    "FusedAttentionBlock",
    "LatentForecaster",
    "SpatialDecoder",
    "SpatialEncoder",
    "group_count",
    "sampling_strides",
    "sincos_2d",
]


def group_count(channels: int, preferred: int) -> int:
    """Largest divisor of ``channels`` that is <= ``preferred`` (GroupNorm needs groups | channels)."""
    g = max(1, min(preferred, channels))
    while channels % g:
        g -= 1
    return g


def sampling_strides(n_layers: int) -> list[int]:
    """SimVP's encoder stride pattern 1, 2, 1, 2, ... cut to ``n_layers``."""
    return [1 + (i % 2) for i in range(n_layers)]


class ConvSC(nn.Module):
    """SimVP's basic conv: 3x3 conv (stride 2 to down-sample), GroupNorm, SiLU.

    ``upsample="shuffle"`` doubles the resolution OpenSTL's way (conv to 4*C_out + PixelShuffle);
    ``upsample="transpose"`` uses a stride-2 transposed conv (SimVP v1 / ST-AlterNet decoder).
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel_size: int = 3,
        downsample: bool = False,
        upsample: str | None = None,
        act_norm: bool = True,
    ):
        super().__init__()
        if upsample not in (None, "shuffle", "transpose"):
            raise ValueError(f"ConvSC: upsample must be None, 'shuffle' or 'transpose', got {upsample!r}")
        if downsample and upsample:
            raise ValueError("ConvSC: cannot both down- and up-sample")
        pad = kernel_size // 2
        if upsample == "shuffle":
            self.conv = nn.Sequential(nn.Conv2d(c_in, 4 * c_out, kernel_size, padding=pad), nn.PixelShuffle(2))
        elif upsample == "transpose":
            self.conv = nn.ConvTranspose2d(c_in, c_out, kernel_size, stride=2, padding=pad, output_padding=1)
        else:
            self.conv = nn.Conv2d(c_in, c_out, kernel_size, stride=2 if downsample else 1, padding=pad)
        self.act_norm = act_norm
        self.norm = nn.GroupNorm(group_count(c_out, 2), c_out) if act_norm else nn.Identity()
        self.act = nn.SiLU() if act_norm else nn.Identity()
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class SpatialEncoder(nn.Module):
    """Per-frame encoder: ``n_layers`` ConvSC with strides 1, 2, 1, 2, ...; also returns the
    first layer's full-resolution output (the decoder's skip)."""

    def __init__(self, c_in: int, hid: int, n_layers: int, kernel_size: int = 3):
        super().__init__()
        strides = sampling_strides(n_layers)
        self.layers = nn.ModuleList(
            ConvSC(c_in if i == 0 else hid, hid, kernel_size, downsample=s == 2) for i, s in enumerate(strides)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = h = self.layers[0](x)
        for layer in self.layers[1:]:
            h = layer(h)
        return h, skip


class SpatialDecoder(nn.Module):
    """Per-frame decoder mirroring ``SpatialEncoder`` (up-sampling first); the last layer takes
    ``hidden + skip`` (sum, as OpenSTL), then a 1x1 readout to ``c_out`` (no activation)."""

    def __init__(self, hid: int, c_out: int, n_layers: int, kernel_size: int = 3, upsample: str = "shuffle"):
        super().__init__()
        strides = sampling_strides(n_layers)[::-1]
        self.layers = nn.ModuleList(
            ConvSC(hid, hid, kernel_size, upsample=upsample if s == 2 else None) for s in strides
        )
        self.readout = nn.Conv2d(hid, c_out, 1)

    def forward(self, h: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            h = layer(h)
        return self.readout(self.layers[-1](h + skip))


@lru_cache(maxsize=32)
def _sincos_2d_cpu(dim: int, h: int, w: int) -> torch.Tensor:
    quarter = dim // 4
    omega = 1.0 / (10000.0 ** (torch.arange(quarter, dtype=torch.float64) / max(quarter, 1)))
    ys = torch.arange(h, dtype=torch.float64)[:, None] * omega  # (h, q)
    xs = torch.arange(w, dtype=torch.float64)[:, None] * omega  # (w, q)
    pe = torch.cat(
        [
            ys.sin()[:, None, :].expand(h, w, quarter),
            ys.cos()[:, None, :].expand(h, w, quarter),
            xs.sin()[None, :, :].expand(h, w, quarter),
            xs.cos()[None, :, :].expand(h, w, quarter),
        ],
        dim=-1,
    )
    return pe.permute(2, 0, 1).contiguous().float()  # (dim, h, w)


def sincos_2d(dim: int, h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Fixed 2-D sinusoidal position encoding ``(dim, h, w)``: a quarter of the channels each for
    sin/cos of the row and of the column index (MAE style). ``dim`` must be a multiple of 4."""
    if dim % 4:
        raise ValueError(f"sincos_2d: dim must be a multiple of 4, got {dim}")
    return _sincos_2d_cpu(int(dim), int(h), int(w)).to(device=device, dtype=dtype)


class DropPath(nn.Module):
    """Stochastic depth per sample (timm); identity at rate 0 or in eval mode."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"DropPath: p must be in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class FusedAttentionBlock(nn.Module):
    """``LayerNorm(z_h + z + MHSA(z))`` on tokens (B, N, dim) via ``sdkd.ops.attention``.

    Holds the packed qkv projection, the output projection and the LayerNorm affine; the
    computation itself is the op, so a fused backend replaces it without touching callers.
    ``forward(..., return_low=True)`` also returns the low-frequency branch ``z + MHSA(z)``
    (computed unfused with the reference, for feature distillation).
    """

    def __init__(self, dim: int, num_heads: int, eps: float = 1e-5, qkv_bias: bool = True, backend: str = "auto"):
        super().__init__()
        if dim <= 0 or num_heads <= 0 or dim % num_heads:
            raise ValueError(f"FusedAttentionBlock: num_heads={num_heads} must divide dim={dim}")
        self.dim, self.num_heads, self.eps, self.backend = dim, num_heads, float(eps), backend
        self.w_qkv = nn.Parameter(torch.empty(3 * dim, dim))
        self.b_qkv = nn.Parameter(torch.zeros(3 * dim)) if qkv_bias else None
        self.w_o = nn.Parameter(torch.empty(dim, dim))
        self.b_o = nn.Parameter(torch.zeros(dim))
        self.ln_weight = nn.Parameter(torch.ones(dim))
        self.ln_bias = nn.Parameter(torch.zeros(dim))
        nn.init.trunc_normal_(self.w_qkv, std=0.02)
        nn.init.trunc_normal_(self.w_o, std=0.02)

    def forward(
        self, z: torch.Tensor, z_h: torch.Tensor | None = None, return_low: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        args = (self.w_qkv, self.b_qkv, self.w_o, self.b_o, self.ln_weight, self.ln_bias)
        if not return_low:
            return attention(
                z, z_h, *args, self.num_heads, self.eps, backend=self.backend, check=False
            )  # loss checks downstream
        z_l = z + mhsa_reference(z, self.w_qkv, self.b_qkv, self.w_o, self.b_o, self.num_heads)
        s = z_l if z_h is None else z_h + z_l
        return F.layer_norm(s, (self.dim,), self.ln_weight, self.ln_bias, self.eps), z_l

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, eps={self.eps}"


class LatentForecaster(nn.Module):
    """Skeleton shared by the SimVP-style teachers: pad, per-frame ``SpatialEncoder``, a latent
    model on time folded into channels (subclass), per-frame ``SpatialDecoder``, crop.

    Subclasses implement ``evolve(enc, feats) -> (B, T_out*hid_S, h, w)``. The decoder's skip from
    the first encoder layer is mapped from T_in to T_out frames by a 1x1 conv over the folded
    ``time*hid_S`` channels when T_out != T_in (identity otherwise).
    """

    model_name = "latent_forecaster"

    def _build_skeleton(
        self,
        in_shape: tuple[int, int, int, int],
        out_frames: int,
        hid_S: int,
        N_S: int,
        spatio_kernel: int,
        upsample: str,
    ) -> None:
        T, C, H, W = in_shape
        self.in_shape, self.out_frames = tuple(in_shape), int(out_frames)
        self.hid_S = hid_S
        self.pad_multiple = 2 ** sum(s == 2 for s in sampling_strides(N_S))
        self.latent_hw = (-(-H // self.pad_multiple), -(-W // self.pad_multiple))
        self.encoder = SpatialEncoder(C, hid_S, N_S, spatio_kernel)
        self.decoder = SpatialDecoder(hid_S, C, N_S, spatio_kernel, upsample=upsample)
        self.skip_readout = nn.Conv2d(T * hid_S, out_frames * hid_S, 1) if out_frames != T else nn.Identity()

    def evolve(self, enc: torch.Tensor, feats: dict[str, torch.Tensor] | None) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self, x: torch.Tensor, return_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``x`` (B, T_in, C, H, W) -> (B, T_out, C, H, W); with ``return_features`` also a dict of
        latent features ``"enc"`` (B, T_in*hid_S, h, w), ``"block{i}"``, ... at the padded latent size."""
        check_input(x, self.in_shape, self.model_name)
        B, T, C = x.shape[:3]
        x, hw = pad_to_multiple(x, self.pad_multiple)
        Hp, Wp = x.shape[-2:]
        lat, skip = self.encoder(x.reshape(B * T, C, Hp, Wp))
        enc = lat.reshape(B, T * self.hid_S, *lat.shape[-2:])
        feats: dict[str, torch.Tensor] | None = {"enc": enc} if return_features else None
        z = self.evolve(enc, feats)
        To = self.out_frames
        z = z.reshape(B * To, self.hid_S, *z.shape[-2:])
        skip = self.skip_readout(skip.reshape(B, T * self.hid_S, Hp, Wp)).reshape(B * To, self.hid_S, Hp, Wp)
        y = crop_to(self.decoder(z, skip).reshape(B, To, C, Hp, Wp), hw)
        return (y, feats) if return_features else y


class MixMlp(nn.Module):
    """1x1 dim -> hidden, depth-wise 3x3, GELU, dropout, 1x1 back, dropout."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.dwconv(self.fc1(x))))))
