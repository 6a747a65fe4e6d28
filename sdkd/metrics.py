"""Evaluation metrics on ``(..., H, W)`` tensors (DESIGN.md section 7).

- ``mse``/``mae``: per-pixel means over everything; ``convention="openstl"`` gives OpenSTL's
  form instead (sum over C, H, W, mean over samples and frames = per-pixel mean x C*H*W), to set
  results beside published OpenSTL tables.
- ``psnr``: per 2-D map (every frame and channel), ``10 log10(range^2 / mse)``, averaged.
- ``ssim``: Wang et al. 2004 with an 11-tap Gaussian window (sigma 1.5), K1 0.01, K2 0.03,
  population covariance and the valid (cropped) region, averaged per map; equal to
  ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=...)`` per map.
- ``band_errors``: the error energy below/above a radial frequency cutoff (eq. 9), in the
  same split as ``sdkd.ops.spectral_loss`` so the two bands sum to the MSE.
- ``energy_spectrum``/``spectrum_slope``: radially binned power spectrum and its log-log slope.

Report them in normalised units, or in physical units after ``dataset.denormalize``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sdkd.ops.spectral_loss import band_energies_reference

__all__ = ["mse", "mae", "psnr", "ssim", "band_errors", "energy_spectrum", "spectrum_slope"]

REDUCTIONS = ("mean", "none")
CONVENTIONS = ("pixel", "openstl")


# ----------------------------------------------------------------------------- checks
def _as_float_tensor(x: Any, name: str, fn: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{fn}: {name} must be a tensor, got {type(x).__name__}")
    if x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"{fn}: {name} must be a real tensor, got dtype {x.dtype}")
    if not x.is_floating_point():
        x = x.to(torch.float32)
    if x.numel() == 0:
        raise ValueError(f"{fn}: {name} is empty (shape {tuple(x.shape)})")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{fn}: {name} contains NaN or Inf")
    return x


def _check_pair(pred: Any, target: Any, fn: str, min_dims: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a (pred, target) pair and promote both to a common floating dtype."""
    pred = _as_float_tensor(pred, "pred", fn)
    target = _as_float_tensor(target, "target", fn)
    if pred.shape != target.shape:
        raise ValueError(f"{fn}: pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    if pred.device != target.device:
        raise ValueError(f"{fn}: pred is on {pred.device} but target on {target.device}")
    if pred.dim() < min_dims:
        raise ValueError(f"{fn}: inputs must be (..., H, W) with at least {min_dims} dims, got {tuple(pred.shape)}")
    dtype = torch.promote_types(pred.dtype, target.dtype)
    return pred.to(dtype), target.to(dtype)


def _data_range(data_range: float | None, target: torch.Tensor, fn: str) -> float:
    if data_range is None:
        data_range = float(target.max() - target.min())
        if data_range <= 0:
            raise ValueError(f"{fn}: target is constant, so its range is 0; pass data_range explicitly")
        return data_range
    data_range = float(data_range)
    if not math.isfinite(data_range) or data_range <= 0:
        raise ValueError(f"{fn}: data_range must be a finite number > 0, got {data_range}")
    return data_range


def _reduce(values: torch.Tensor, reduction: str, fn: str) -> torch.Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "none":
        return values
    raise ValueError(f"{fn}: reduction must be one of {REDUCTIONS}, got {reduction!r}")


# ----------------------------------------------------------------------------- pixel metrics
def _pixel_mean(err: torch.Tensor, convention: str, fn: str) -> torch.Tensor:
    """``"pixel"``: mean over all elements; ``"openstl"``: sum over the last three dims ``(C, H, W)``,
    mean over the rest (OpenSTL's ``spatial_norm=False``, used for its TaxiBJ/MMNIST tables)."""
    if convention == "pixel":
        return err.mean()
    if convention == "openstl":
        if err.dim() < 3:
            raise ValueError(f"{fn}: convention='openstl' needs (..., C, H, W) inputs, got shape {tuple(err.shape)}")
        return err.sum(dim=(-3, -2, -1)).mean()
    raise ValueError(f"{fn}: convention must be one of {CONVENTIONS}, got {convention!r}")


def mse(pred: torch.Tensor, target: torch.Tensor, convention: str = "pixel") -> torch.Tensor:
    """Mean squared error (0-dim tensor): over all elements, or OpenSTL's per-frame sum over
    ``(C, H, W)`` averaged over samples and frames (``convention="openstl"``)."""
    pred, target = _check_pair(pred, target, "mse")
    return _pixel_mean((pred - target).square(), convention, "mse")


def mae(pred: torch.Tensor, target: torch.Tensor, convention: str = "pixel") -> torch.Tensor:
    """Mean absolute error (0-dim tensor), in the same two conventions as ``mse``."""
    pred, target = _check_pair(pred, target, "mae")
    return _pixel_mean((pred - target).abs(), convention, "mae")


def psnr(
    pred: torch.Tensor, target: torch.Tensor, data_range: float | None = None, reduction: str = "mean"
) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, per 2-D map ``(H, W)`` then averaged.

    ``data_range``: the peak ``R`` in ``10 log10(R^2 / mse)``; default ``target.max() -
    target.min()`` over the whole tensor (pass it explicitly to compare runs). A map with zero
    error gives ``inf``. ``reduction="none"`` returns the per-map values ``(...)``.
    """
    pred, target = _check_pair(pred, target, "psnr", min_dims=2)
    R = _data_range(data_range, target, "psnr")
    err = (pred - target).square().mean(dim=(-2, -1))
    return _reduce(10.0 * torch.log10(R * R / err), reduction, "psnr")


# ----------------------------------------------------------------------------- SSIM
def gaussian_window(win_size: int = 11, sigma: float = 1.5, dtype=torch.float64, device=None) -> torch.Tensor:
    """Normalised 1-D Gaussian taps (as ``scipy.ndimage.gaussian_filter`` with truncate 3.5)."""
    x = torch.arange(win_size, dtype=dtype, device=device) - (win_size - 1) / 2
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def _filter(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable valid Gaussian filter of ``(N, 1, H, W)``."""
    n = g.numel()
    x = F.conv2d(x, g.view(1, 1, 1, n))
    return F.conv2d(x, g.view(1, 1, n, 1))


def ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    data_range: float,
    *,
    win_size: int = 11,
    sigma: float = 1.5,
    K1: float = 0.01,
    K2: float = 0.03,
    reduction: str = "mean",
) -> torch.Tensor:
    """Structural similarity of ``(..., H, W)`` maps, averaged over maps (frames and channels).

    Gaussian-weighted local statistics with population covariance; only the region where the
    window fits (the crop skimage applies) is averaged. ``data_range`` (required, > 0) sets
    ``C1 = (K1 R)^2``, ``C2 = (K2 R)^2``. Computed in float32 (float64 for float64 inputs).
    ``reduction="none"`` returns the per-map values ``(...)``.
    """
    pred, target = _check_pair(pred, target, "ssim", min_dims=2)
    R = _data_range(data_range, target, "ssim")
    if isinstance(win_size, bool) or not isinstance(win_size, int) or win_size < 1 or win_size % 2 == 0:
        raise ValueError(f"ssim: win_size must be a positive odd integer, got {win_size!r}")
    H, W = pred.shape[-2:]
    if H < win_size or W < win_size:
        raise ValueError(f"ssim: maps of {H}x{W} are smaller than the {win_size}x{win_size} window")
    lead = pred.shape[:-2]
    dtype = torch.float64 if pred.dtype == torch.float64 else torch.float32
    x = pred.to(dtype).reshape(-1, 1, H, W)
    y = target.to(dtype).reshape(-1, 1, H, W)
    g = gaussian_window(win_size, sigma, dtype=dtype, device=x.device)
    mx, my = _filter(x, g), _filter(y, g)
    vx = _filter(x * x, g) - mx * mx
    vy = _filter(y * y, g) - my * my
    vxy = _filter(x * y, g) - mx * my
    C1, C2 = (K1 * R) ** 2, (K2 * R) ** 2
    s = ((2 * mx * my + C1) * (2 * vxy + C2)) / ((mx * mx + my * my + C1) * (vx + vy + C2))
    return _reduce(s.mean(dim=(-3, -2, -1)).reshape(lead), reduction, "ssim")


# ----------------------------------------------------------------------------- spectral metrics
def band_errors(
    pred: torch.Tensor, target: torch.Tensor, cutoff: float = 0.25, *, relative: bool = False
) -> dict[str, torch.Tensor]:
    """Error energy in the low (``r <= cutoff``) and high frequency bands, eq. 9.

    ``r`` is the radial normalised frequency in cycles per sample, as in SpectralKD. Absolute
    (default): ``{"low", "high"}`` are the mean squared error per pixel carried by each band,
    so ``low + high == mse(pred, target)``. ``relative=True`` divides each by the target's own
    energy (mean square per pixel) in that band (``nan`` for a band where the target has none).
    """
    pred, target = _check_pair(pred, target, "band_errors", min_dims=2)
    cutoff = float(cutoff)
    if not math.isfinite(cutoff) or cutoff < 0:
        raise ValueError(f"band_errors: cutoff must be a finite number >= 0, got {cutoff}")
    e = band_energies_reference(pred - target, (cutoff,), "mean")
    if relative:
        ref = band_energies_reference(target, (cutoff,), "mean")
        e = torch.where(ref > 0, e / ref.clamp_min(torch.finfo(ref.dtype).tiny), torch.full_like(e, float("nan")))
    return {"low": e[0], "high": e[1]}


def energy_spectrum(field: torch.Tensor, *, include_corners: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Radially binned energy spectrum ``(k, E(k))`` of ``(..., H, W)`` fields, averaged over maps.

    ``k`` are integer shells of ``|k| = sqrt(ky^2 + kx^2)`` with wavenumbers in cycles per
    ``L = max(H, W)`` pixels (the usual integer wavenumbers for a square field), rounded to the
    nearest integer. ``E(k)`` sums ``|FFT(field)|^2 / (H W)^2`` over the shell, so with
    ``include_corners=True`` (all shells) ``E.sum()`` is the mean square of the field; by
    default only the complete shells ``k <= L // 2`` are returned. ``E(0)`` is the squared mean.
    """
    field = _as_float_tensor(field, "field", "energy_spectrum")
    if field.dim() < 2:
        raise ValueError(f"energy_spectrum: field must be (..., H, W), got shape {tuple(field.shape)}")
    H, W = field.shape[-2:]
    dtype = torch.float64 if field.dtype == torch.float64 else torch.float32
    X = torch.fft.fft2(field.to(dtype), norm="ortho")
    p = (X.real.square() + X.imag.square()).reshape(-1, H, W).mean(0) / (H * W)
    L = max(H, W)
    ky = torch.fft.fftfreq(H, dtype=torch.float64, device=field.device) * L
    kx = torch.fft.fftfreq(W, dtype=torch.float64, device=field.device) * L
    shell = torch.round(torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)).to(torch.int64)
    E = torch.bincount(shell.flatten(), weights=p.flatten().to(torch.float64))
    if not include_corners:
        E = E[: L // 2 + 1]
    k = torch.arange(E.numel(), dtype=torch.float64, device=field.device)
    return k, E


def spectrum_slope(
    k: torch.Tensor | np.ndarray, E: torch.Tensor | np.ndarray, k_range: Sequence[float] | None = None
) -> float:
    """Least-squares slope of ``log E`` against ``log k`` for ``k_range[0] <= k <= k_range[1]``
    (default: all ``k > 0``); shells with ``E <= 0`` are skipped. A ``k^-3`` spectrum gives -3."""
    k = np.asarray(k.detach().cpu() if isinstance(k, torch.Tensor) else k, dtype=np.float64).ravel()
    E = np.asarray(E.detach().cpu() if isinstance(E, torch.Tensor) else E, dtype=np.float64).ravel()
    if k.shape != E.shape:
        raise ValueError(f"spectrum_slope: k has {k.size} values but E has {E.size}")
    lo, hi = (0.0, math.inf) if k_range is None else (float(k_range[0]), float(k_range[1]))
    if not lo <= hi:
        raise ValueError(f"spectrum_slope: k_range must be (low, high) with low <= high, got {k_range!r}")
    keep = (k > 0) & (k >= lo) & (k <= hi) & (E > 0) & np.isfinite(E)
    if keep.sum() < 2:
        raise ValueError(f"spectrum_slope: need at least 2 shells with k > 0 and E > 0 in k_range={k_range!r}")
    slope, _ = np.polyfit(np.log(k[keep]), np.log(E[keep]), 1)
    return float(slope)
