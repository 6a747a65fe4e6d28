"""The torch.fft path of the fused backends: one rfft2 + one irfft2 with the band gains folded into per-bin
maps (taken when the DFT box would hold most of the spectrum, or the slice is too large for the box kernel)."""

from __future__ import annotations

from functools import lru_cache

import torch

from .definition import band_index, hermitian_weights
from .plan import _fixed_gains


@lru_cache(maxsize=64)
def _fft_geometry(H: int, W: int, cuts: tuple[float, ...], device: torch.device, dtype: torch.dtype):
    """``(band index (H, W//2+1) int64, Hermitian column weights (W//2+1,))`` on ``device``: constants of the FFT
    path, cached so a call pays no host-to-device copy (a pageable copy also stalls the host on the GPU)."""
    return band_index(H, W, cuts, device=device), hermitian_weights(W, device=device, dtype=dtype)


def _fft_energies(x: torch.Tensor, cuts, band_mean: bool) -> torch.Tensor:
    """Raw band energies (float64) of (N, H, W) ``x`` by rfft2 (the teacher's, for adaptive gains)."""
    N, H, W = x.shape
    idx, colw = _fft_geometry(H, W, cuts, x.device, x.dtype)
    X = torch.fft.rfft2(x, norm="ortho")
    p = (X.real.square() + X.imag.square()).sum(0)
    pw = p if band_mean else p * colw
    return torch.zeros(len(cuts) + 1, dtype=torch.float64, device=x.device).index_add(
        0, idx.flatten(), pw.flatten().to(torch.float64)
    )


def _fft_maps(H: int, W: int, cuts, gains: torch.Tensor, band_mean: bool, dtype: torch.dtype):
    """Per-bin maps of the FFT path for gains c_b: ``loss = sum lmap |X|^2`` and ``grad = irfft2(gmap X)``.

    ``lmap = c_band (* colw for "mean")``; ``gmap = 2 c_band (/ colw for "band_mean": |X|^2 of a half-plane bin
    is half the full-plane energy of its pair)``. Shapes ``(H, W//2+1, 1)`` (against ``view_as_real``) and
    ``(H, W//2+1)``.
    """
    idx, colw = _fft_geometry(H, W, cuts, gains.device, dtype)
    c = gains.to(dtype)[idx]
    lmap = c if band_mean else c * colw
    gmap = 2 * c / colw if band_mean else 2 * c
    return lmap.unsqueeze(-1).contiguous(), gmap.contiguous()


@lru_cache(maxsize=64)
def _fixed_fft_maps(H, W, cuts, weights, norms, band_mean: bool, device: torch.device, dtype: torch.dtype):
    return _fft_maps(H, W, cuts, _fixed_gains(weights, norms, str(device), torch.float64), band_mean, dtype)


def _fft_loss_grad(x: torch.Tensor, maps) -> tuple[torch.Tensor, torch.Tensor]:
    """FFT path for (N, H, W) ``x``: loss (0-dim, ``x``'s dtype) and its gradient, a handful of ops (one rfft2,
    one irfft2, no per-band reduction: the gains are folded into the per-bin maps)."""
    lmap, gmap = maps
    N, H, W = x.shape
    X = torch.fft.rfft2(x, norm="ortho")
    loss = (torch.view_as_real(X).square() * lmap).sum()
    grad = torch.fft.irfft2(X.mul_(gmap), s=(H, W), norm="ortho")
    return loss, grad
