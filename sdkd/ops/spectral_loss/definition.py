"""SpectralKD's definition (DESIGN.md section 5): input checks, band geometry and the plain-PyTorch reference.

The reference is the definition of correctness: ``D = rfft2(s - t, norm="ortho")``, Hermitian bin weights so
that the bands split the MSE exactly, radial normalised frequency ``r = sqrt((ky/H)^2 + (kx/W)^2)`` and bands
cut at ``cutoffs`` (band 0: ``r <= c0``). Every fast backend must match it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import torch

from .._device_checks import assert_on_device
from ..spectral_cutoffs import as_cutoffs

REDUCTIONS = ("mean", "band_mean")


# ----------------------------------------------------------------------------- band geometry
@lru_cache(maxsize=64)
def _band_index_cpu(H: int, W: int, cutoffs: tuple[float, ...]) -> torch.Tensor:
    # cycles per sample as exact quotients i/n (fftfreq's i * (1/n) rounds bins lying on a cutoff either way)
    iy = torch.arange(H, dtype=torch.float64)
    ky = torch.where(iy < (H + 1) // 2, iy, iy - H) / H  # signed, as fftfreq
    kx = torch.arange(W // 2 + 1, dtype=torch.float64) / W  # as rfftfreq
    r2 = ky[:, None] ** 2 + kx[None, :] ** 2
    idx = torch.zeros(H, W // 2 + 1, dtype=torch.int64)
    for c in cutoffs:  # band b: c_{b-1} < r <= c_b as squares in float64; a bin on a cutoff (to rounding) is low
        idx += (r2 > c * c * (1 + 1e-12)).to(torch.int64)
    return idx


def band_index(H: int, W: int, cutoffs: Sequence[float], device=None) -> torch.Tensor:
    """Band number of every rfft2 bin, ``(H, W//2+1)`` int64. Shared by every backend."""
    return _band_index_cpu(int(H), int(W), tuple(float(c) for c in cutoffs)).to(device)


def hermitian_weights(W: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """``w(kx)``: 1 for kx = 0 and (W even) kx = W/2, else 2, so that sum w|D|^2 = sum x^2."""
    w = torch.full((W // 2 + 1,), 2.0, dtype=dtype, device=device)
    w[0] = 1.0
    if W % 2 == 0:
        w[-1] = 1.0
    return w


def band_bin_counts(H: int, W: int, cutoffs: Sequence[float]) -> torch.Tensor:
    """Number of rfft2 bins in each band (unweighted), ``(len(cutoffs)+1,)``."""
    idx = band_index(H, W, cutoffs)
    return torch.bincount(idx.flatten(), minlength=len(cutoffs) + 1)


# ----------------------------------------------------------------------------- validation
def normalize_args(
    s: torch.Tensor,
    t: torch.Tensor,
    cutoffs: float | Sequence[float],
    weights: Sequence[float] | torch.Tensor | None,
    reduction: str,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Check the call and return ``(cutoffs, weights)`` as tuples. Raises on bad input."""
    if not isinstance(s, torch.Tensor) or not isinstance(t, torch.Tensor):
        raise TypeError("spectral_loss: student and teacher must be tensors")
    if s.shape != t.shape:
        raise ValueError(f"spectral_loss: student shape {tuple(s.shape)} != teacher shape {tuple(t.shape)}")
    if s.dim() < 2:
        raise ValueError(f"spectral_loss: inputs need at least 2 dims (..., H, W), got shape {tuple(s.shape)}")
    if s.device != t.device:
        raise ValueError(f"spectral_loss: student on {s.device} but teacher on {t.device}")
    if s.dtype != t.dtype:
        raise TypeError(f"spectral_loss: student dtype {s.dtype} != teacher dtype {t.dtype}")
    if not s.is_floating_point():
        raise TypeError(f"spectral_loss: inputs must be floating point, got {s.dtype}")
    if s.numel() == 0:
        raise ValueError("spectral_loss: inputs are empty")
    if reduction not in REDUCTIONS:
        raise ValueError(f"spectral_loss: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    cuts = as_cutoffs(cutoffs, "spectral_loss")
    nb = len(cuts) + 1
    if weights is None:
        w = (1.0,) * nb
    else:
        w = tuple(float(x) for x in (weights.tolist() if isinstance(weights, torch.Tensor) else weights))
        if len(w) != nb:
            raise ValueError(f"spectral_loss: {len(cuts)} cutoff(s) make {nb} bands, but {len(w)} weights were given")
        if any(not math.isfinite(x) for x in w):
            raise ValueError(f"spectral_loss: weights must be finite, got {w}")
    return cuts, w


def check_finite(value: torch.Tensor, s: torch.Tensor, t: torch.Tensor) -> None:
    """Raise if the loss is not finite, naming the input that caused it.

    Checked on the device (no host read on the success path, DESIGN.md section 2): on the CPU a failure
    raises at once and names the input; on CUDA and under torch.compile it is an asynchronous assert
    that names none.
    """

    def diagnose() -> None:
        for name, x in (("student", s), ("teacher", t)):
            if not bool(torch.isfinite(x).all()):
                raise ValueError(f"spectral_loss: the {name} tensor contains NaN or Inf")
        raise FloatingPointError("spectral_loss: the loss overflowed (inputs are finite but too large for the dtype)")

    assert_on_device(torch.isfinite(value), "spectral_loss: the loss is not finite (NaN/Inf inputs?)", diagnose)


# ----------------------------------------------------------------------------- reference
def band_energies_reference(x: torch.Tensor, cutoffs: Sequence[float], reduction: str = "mean") -> torch.Tensor:
    """Per-band energy of ``x`` (..., H, W) as the loss uses it, ``(n_bands,)`` float32/64.

    ``mean``: sum over bins of w|X|^2 divided by numel(x) (the bands sum to mean(x^2)).
    ``band_mean``: mean of |X|^2 over the band's bins (unweighted) and the leading dims;
    an empty band gives 0.
    """
    H, W = x.shape[-2:]
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    X = torch.fft.rfft2(x.to(acc), norm="ortho")
    p = X.real.square() + X.imag.square()  # (..., H, W//2+1)
    p = p.reshape(-1, H, W // 2 + 1).sum(0)
    idx = band_index(H, W, cutoffs, device=x.device)
    nb = len(cutoffs) + 1
    if reduction == "mean":
        p = p * hermitian_weights(W, device=x.device, dtype=acc)
        e = torch.zeros(nb, dtype=acc, device=x.device).index_add(0, idx.flatten(), p.flatten())
        return e / x.numel()
    counts = torch.bincount(idx.flatten(), minlength=nb).to(acc)
    e = torch.zeros(nb, dtype=acc, device=x.device).index_add(0, idx.flatten(), p.flatten())
    n_lead = x.numel() // (H * W)
    return torch.where(counts > 0, e / (counts.clamp_min(1) * n_lead), torch.zeros_like(e))


def band_terms_reference(
    s: torch.Tensor,
    t: torch.Tensor,
    cutoffs: Sequence[float],
    weights: Sequence[float],
    reduction: str = "mean",
    adaptive: bool = False,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Weighted per-band terms whose sum is the loss, ``(n_bands,)``, differentiable."""
    err = band_energies_reference(s - t, cutoffs, reduction)
    if adaptive:
        with torch.no_grad():
            ref = band_energies_reference(t.detach(), cutoffs, reduction)
        err = err / (ref + eps)
    return err * _band_weights(tuple(weights), str(err.device), err.dtype)


@lru_cache(maxsize=256)
def _band_weights(weights: tuple[float, ...], device: str, dtype: torch.dtype) -> torch.Tensor:
    """The weights as a tensor, cached per device: a host-to-device copy per step would synchronise on CUDA."""
    return torch.tensor(weights, dtype=dtype, device=device)


def spectral_loss_reference(
    s: torch.Tensor,
    t: torch.Tensor,
    cutoffs: Sequence[float] = (0.25,),
    weights: Sequence[float] | None = None,
    reduction: str = "mean",
    adaptive: bool = False,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Plain-PyTorch SpectralKD loss; autograd gives the gradient. Returns a 0-dim tensor
    in the input dtype (accumulated in fp32, or fp64 for fp64 inputs). As the definition it also takes
    cutoffs that leave a band of this grid empty (the band adds 0); ``spectral_loss`` refuses them."""
    cuts, w = normalize_args(s, t, cutoffs, weights, reduction)
    loss = band_terms_reference(s, t, cuts, w, reduction, adaptive, eps).sum()
    return loss.to(s.dtype)
