"""SimVP (teacher T2, DESIGN.md section 4; REFERENCES.md section 1): the standard OpenSTL SimVP
with a gSTA (SimVP v2), Inception (SimVP v1, ``IncepU``) or VAN (large-kernel attention, OpenSTL's
``model_type="van"``; the paper's Table 5 "single teacher (VAN)") translator.

Differences from OpenSTL, all on purpose: T_out != T_in comes from a 1x1 readout over the folded
``time*hid_S`` channels (and the same mapping for the decoder skip) instead of truncation or
rollout; any H, W works (replicate-pad to a multiple of the down-sampling, crop back); drop-path
rates are ``linspace(0, drop_path)`` so ``drop_path=0`` is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from .layers import DropPath, LatentForecaster, MixMlp, group_count
from .registry import register_model
from .van import VANBlock

__all__ = ["SimVP", "SimVPConfig", "GASubBlock", "GInceptionST"]

TRANSLATORS = ("gsta", "incep", "van")


@dataclass
class SimVPConfig:
    """Hyper-parameters (OpenSTL names). ``translator``: ``"gsta"``, ``"incep"`` or ``"van"``; ``N_T``:
    translator depth (gSTA/VAN blocks, or Inception U-Net levels); ``mlp_ratio``/``drop``/``drop_path``:
    gSTA and VAN only; ``incep_kernels``/``groups``: Inception only."""

    hid_S: int = 32
    hid_T: int = 256
    N_S: int = 4
    N_T: int = 8
    translator: str = "gsta"
    spatio_kernel: int = 3
    mlp_ratio: float = 8.0
    drop: float = 0.0
    drop_path: float = 0.0
    incep_kernels: tuple[int, ...] = (3, 5, 7, 11)
    groups: int = 8

    @classmethod
    def for_shape(cls, in_shape: tuple[int, int, int, int], **overrides) -> SimVPConfig:
        """Defaults for ``in_shape=(T_in, C, H, W)`` (OpenSTL's TaxiBJ/WeatherBench setting, N_S=4 from 64
        pixels on the short side); ``overrides`` replace any field."""
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - valid)
        if unknown:
            raise TypeError(f"simvp: unknown config key(s) {unknown}; valid keys: {sorted(valid)}")
        H, W = in_shape[-2:]
        base = {"N_S": 4 if min(H, W) >= 64 else 2}
        base.update(overrides)
        if "incep_kernels" in base:
            base["incep_kernels"] = tuple(int(k) for k in base["incep_kernels"])
        cfg = cls(**base)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        for name in ("hid_S", "hid_T", "N_S", "N_T", "spatio_kernel", "groups"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"simvp: {name} must be a positive int, got {v!r}")
        if self.translator not in TRANSLATORS:
            raise ValueError(f"simvp: translator must be one of {TRANSLATORS}, got {self.translator!r}")
        if self.translator == "incep" and self.N_T < 2:
            raise ValueError(f"simvp: the Inception translator needs N_T >= 2, got {self.N_T}")
        if self.translator == "incep" and self.hid_T < 2:
            raise ValueError(f"simvp: the Inception translator needs hid_T >= 2, got {self.hid_T}")
        if not self.incep_kernels or any(k <= 0 or k % 2 == 0 for k in self.incep_kernels):
            raise ValueError(f"simvp: incep_kernels must be positive odd ints, got {self.incep_kernels}")
        if self.spatio_kernel % 2 == 0:
            raise ValueError(f"simvp: spatio_kernel must be odd, got {self.spatio_kernel}")
        if not self.mlp_ratio > 0:
            raise ValueError(f"simvp: mlp_ratio must be > 0, got {self.mlp_ratio}")
        if not 0.0 <= self.drop < 1.0 or not 0.0 <= self.drop_path < 1.0:
            raise ValueError(f"simvp: drop and drop_path must be in [0, 1), got {self.drop}, {self.drop_path}")


# ----------------------------------------------------------------------------- gSTA (SimVP v2)
class AttentionModule(nn.Module):
    """Large-kernel gated attention (kernel 21, dilation 3): dw 5x5, dw 7x7 dilated 3, 1x1 to 2*dim,
    output ``sigmoid(g) * f``."""

    def __init__(self, dim: int, kernel_size: int = 21, dilation: int = 3):
        super().__init__()
        d_k = 2 * dilation - 1
        dd_k = kernel_size // dilation + ((kernel_size // dilation) % 2 - 1)
        self.conv0 = nn.Conv2d(dim, dim, d_k, padding=(d_k - 1) // 2, groups=dim)
        self.conv_spatial = nn.Conv2d(dim, dim, dd_k, padding=dilation * (dd_k - 1) // 2, groups=dim, dilation=dilation)
        self.conv1 = nn.Conv2d(dim, 2 * dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f, g = self.conv1(self.conv_spatial(self.conv0(x))).chunk(2, dim=1)
        return torch.sigmoid(g) * f


class SpatialAttention(nn.Module):
    """1x1 conv -> GELU -> gated attention -> 1x1 conv, plus the inner shortcut."""

    def __init__(self, dim: int, kernel_size: int = 21):
        super().__init__()
        self.proj_1 = nn.Conv2d(dim, dim, 1)
        self.act = nn.GELU()
        self.gate = AttentionModule(dim, kernel_size)
        self.proj_2 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj_2(self.gate(self.act(self.proj_1(x))))


class GASubBlock(nn.Module):
    """gSTA block: two pre-norm (BatchNorm) residual branches with layer scale (init 0.01) and drop
    path: spatial gated attention, then ``MixMlp``."""

    def __init__(
        self,
        dim: int,
        kernel_size: int = 21,
        mlp_ratio: float = 8.0,
        drop: float = 0.0,
        drop_path: float = 0.0,
        init_value: float = 1e-2,
    ):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = SpatialAttention(dim, kernel_size)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = MixMlp(dim, max(1, int(dim * mlp_ratio)), drop)
        self.drop_path = DropPath(drop_path)
        self.layer_scale_1 = nn.Parameter(init_value * torch.ones(dim))
        self.layer_scale_2 = nn.Parameter(init_value * torch.ones(dim))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # OpenSTL: normal(0, sqrt(2 / fan_out))
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.layer_scale_1[:, None, None] * self.attn(self.norm1(x)))
        return x + self.drop_path(self.layer_scale_2[:, None, None] * self.mlp(self.norm2(x)))


class MetaBlock(nn.Module):
    """A gSTA (or VAN) block at ``c_in`` channels followed by a 1x1 reduction when ``c_out != c_in``."""

    def __init__(self, c_in: int, c_out: int, mlp_ratio: float, drop: float, drop_path: float, block: str = "gsta"):
        super().__init__()
        if block == "van":
            self.block = VANBlock(c_in, mlp_ratio, drop, drop_path)
        else:
            self.block = GASubBlock(c_in, 21, mlp_ratio, drop, drop_path)
        self.reduction = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduction(self.block(x))


class MidMetaNet(nn.Module):
    """gSTA or VAN translator (``block``): ``c_in -> hid`` (block 1), ``hid`` (blocks 2..N-1),
    ``hid -> c_in`` (block N)."""

    def __init__(
        self, c_in: int, hid: int, n: int, mlp_ratio: float, drop: float, drop_path: float, block: str = "gsta"
    ):
        super().__init__()
        rates = torch.linspace(0, drop_path, n).tolist()
        dims = [c_in] + [hid] * (n - 1) + [c_in] if n > 1 else [c_in, c_in]
        self.layers = nn.ModuleList(
            MetaBlock(dims[i], dims[i + 1], mlp_ratio, drop, rates[i], block) for i in range(len(dims) - 1)
        )

    def forward(self, x: torch.Tensor, feats: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if feats is not None:
                feats[f"block{i}"] = x
        return x


# ----------------------------------------------------------------------------- Inception (SimVP v1)
class GroupConv2d(nn.Module):
    """Grouped conv followed by GroupNorm(groups) and LeakyReLU(0.2); groups fall back to a divisor."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, groups: int):
        super().__init__()
        g = math.gcd(group_count(c_in, groups), c_out)
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2, groups=g)
        self.norm = nn.GroupNorm(g, c_out)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class GInceptionST(nn.Module):
    """``gInception_ST``: 1x1 conv to ``c_hid``, then the sum of grouped convs of several kernel sizes."""

    def __init__(self, c_in: int, c_hid: int, c_out: int, kernels: Sequence[int], groups: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_hid, 1)
        self.branches = nn.ModuleList(GroupConv2d(c_hid, c_out, k, groups) for k in kernels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return sum(b(x) for b in self.branches)


class MidIncepNet(nn.Module):
    """Inception U-Net translator over ``n`` levels without resampling (``IncepU``)."""

    def __init__(self, c_in: int, hid: int, n: int, kernels: Sequence[int], groups: int):
        super().__init__()
        h2 = max(1, hid // 2)
        self.enc = nn.ModuleList(GInceptionST(c_in if i == 0 else hid, h2, hid, kernels, groups) for i in range(n))
        self.dec = nn.ModuleList(
            GInceptionST(hid if i == 0 else 2 * hid, h2, c_in if i == n - 1 else hid, kernels, groups) for i in range(n)
        )

    def forward(self, x: torch.Tensor, feats: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        skips = []
        for i, layer in enumerate(self.enc):
            x = layer(x)
            skips.append(x)
            if feats is not None:
                feats[f"block{i}"] = x
        n = len(self.enc)
        for i, layer in enumerate(self.dec):
            x = layer(x if i == 0 else torch.cat([x, skips[n - 1 - i]], dim=1))
            if feats is not None:
                feats[f"block{n + i}"] = x
        return x


# ----------------------------------------------------------------------------- model
class SimVP(LatentForecaster):
    """SimVP: ``(B, T_in, C, H, W) -> (B, T_out, C, H, W)``.

    Encoder (N_S ConvSC shared over frames) -> time folded into channels -> translator (gSTA,
    Inception or VAN) at ``T_in*hid_S`` in/out channels -> 1x1 readout to ``T_out*hid_S`` (only when
    T_out != T_in) -> per-frame ConvSC decoder (PixelShuffle up-sampling) with the skip from the first
    encoder layer. Features: ``enc`` and ``block{i}`` for every translator block.
    """

    model_name = "simvp"

    def __init__(
        self,
        in_shape: tuple[int, int, int, int],
        out_frames: int | None = None,
        config: SimVPConfig | None = None,
        **overrides,
    ):
        super().__init__()
        if len(in_shape) != 4 or any(int(v) <= 0 for v in in_shape):
            raise ValueError(f"simvp: in_shape must be (T_in, C, H, W) of positive ints, got {in_shape}")
        in_shape = tuple(int(v) for v in in_shape)
        out_frames = in_shape[0] if out_frames is None else int(out_frames)
        if out_frames <= 0:
            raise ValueError(f"simvp: out_frames must be positive, got {out_frames}")
        if config is None:
            config = SimVPConfig.for_shape(in_shape, **overrides)
        elif overrides:
            config = SimVPConfig.for_shape(in_shape, **{**asdict(config), **overrides})
        else:
            config.validate()
        self.config = c = config
        T = in_shape[0]
        self._build_skeleton(in_shape, out_frames, c.hid_S, c.N_S, c.spatio_kernel, upsample="shuffle")
        if c.translator in ("gsta", "van"):
            self.translator = MidMetaNet(
                T * c.hid_S, c.hid_T, c.N_T, c.mlp_ratio, c.drop, c.drop_path, block=c.translator
            )
        else:
            self.translator = MidIncepNet(T * c.hid_S, c.hid_T, c.N_T, c.incep_kernels, c.groups)
        self.readout = nn.Conv2d(T * c.hid_S, out_frames * c.hid_S, 1) if out_frames != T else nn.Identity()

    def evolve(self, enc: torch.Tensor, feats: dict[str, torch.Tensor] | None) -> torch.Tensor:
        return self.readout(self.translator(enc, feats))

    def get_config(self) -> dict:
        """Plain-data config (for checkpoints): ``build_model("simvp", **this)`` rebuilds the model."""
        cfg = asdict(self.config)
        cfg["incep_kernels"] = list(cfg["incep_kernels"])
        return {"in_shape": list(self.in_shape), "out_frames": self.out_frames, **cfg}


@register_model("simvp", config_keys=[f.name for f in fields(SimVPConfig)])
def build_simvp(in_shape: tuple[int, int, int, int], out_frames: int | None = None, **cfg) -> SimVP:
    """Registry builder: the default SimVP for ``in_shape``; ``translator="gsta"|"incep"|"van"`` and any
    other ``cfg`` override config fields."""
    return SimVP(in_shape, out_frames, **cfg)
