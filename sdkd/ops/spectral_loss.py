"""Frequency-band distillation loss (SpectralKD, DESIGN.md section 5) and its backends.

The reference below is the definition of correctness: ``D = rfft2(s - t, norm="ortho")``,
Hermitian bin weights so that the bands split the MSE exactly, radial normalised frequency
``r = sqrt((ky/H)^2 + (kx/W)^2)`` and bands cut at ``cutoffs`` (band 0: ``r <= c0``).
Fast backends register in ``spectral_loss_op`` and must match it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch

from ._device_checks import assert_on_device
from ._dispatch import ENV_VAR, Backend, Op, plain_eager, register_op
from ._ext import cuda_unavailable_reason, extension, triton_installed, unavailable_reason

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
    cuts = (float(cutoffs),) if isinstance(cutoffs, (int, float)) else tuple(float(c) for c in cutoffs)
    if len(cuts) == 0:
        raise ValueError("spectral_loss: need at least one cutoff")
    if any(not math.isfinite(c) or c < 0 for c in cuts):
        raise ValueError(f"spectral_loss: cutoffs must be finite and >= 0, got {cuts}")
    if any(b <= a for a, b in zip(cuts, cuts[1:])):
        raise ValueError(f"spectral_loss: cutoffs must be strictly increasing, got {cuts}")
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
    return err * _fixed_gains(tuple(weights), (1.0,) * len(weights), str(err.device), err.dtype)  # cached: no copy


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
    in the input dtype (accumulated in fp32, or fp64 for fp64 inputs)."""
    cuts, w = normalize_args(s, t, cutoffs, weights, reduction)
    loss = band_terms_reference(s, t, cuts, w, reduction, adaptive, eps).sum()
    return loss.to(s.dtype)


# ----------------------------------------------------------------------------- fused backends
# The cpu, cuda and triton backends compute the loss and its gradient in one pass (the gradient is
# saved in forward and only scaled in backward, Liger-Kernel's loss pattern). Bands below the last
# come from a truncated DFT over a box of rows x columns that holds the largest cutoff's disk
# (REFERENCES.md 8.6); the last band is the energy of the spatial residual after removing them.
# With per-band gains c_b (weight / normaliser, / teacher energy when adaptive) the loss is
# sum_b c_b E_b and the gradient 2 V(sum_b c_b P_b x); see csrc/cpu/spectral_loss.cpp.
# When the box holds most of the spectrum the same backends take the FFT path below instead.

#: box bins / half-spectrum bins above which the fused backends use torch.fft instead of the box DFT
DFT_MAX_FRACTION = 0.3
#: cpu backend, sizes its real-FFT kernel does not take: the box kernel while Kc * (1 + Kr / W) (its multiply-adds
#: per element / 4) stays below this, the torch.fft path beyond. Measured on 2 cores (fwd+bwd over the reference,
#: box / FFT path): 63x65 cost 12.9: 1.9x / 1.6x, 25: 1.0x / 1.4x; 96x96 cost 12: 1.6x / 1.5x, 19.5: 1.3x / 1.5x;
#: 181x360 cost 20: 2.6x / 1.8x, 41: 1.3x / 1.6x. The FFT path is 1.4-1.8x at every size measured.
CPU_BOX_MAX_COST = 16.0
#: cpu backend: its real-FFT kernel (csrc/cpu/spectral_loss_fft.cpp) for any H and W >= 8 (mixed-radix /
#: Bluestein transforms where not a power of two), any cutoff;
#: ~5x the reference in bench/bench_spectral_loss.py (2 cores). False: the box kernel / torch.fft path as for
#: other sizes.
CPU_FFT_KERNEL = True
#: cuda/triton backends: the box kernel only while one slice costs at most this many multiply-adds
#: (``box_macs``; one CUDA block per slice), cuFFT (the FFT path) beyond. H200, bench/results/README.md (run 2):
#: box kernel 4.8x / 2.7x the reference at 64x64 (0.57 M per slice) / 32x64 (0.21 M), 0.39x at 128x128 (4.4 M,
#: compute-bound), where the FFT path is 1.5x; the threshold sits between the measured points.
GPU_BOX_MAX_SLICE_MACS = 1.5e6
#: cuda backend: its FFT-based kernel (csrc/cuda/spectral_loss_fft_kernel.cuh: radix-2 FFTs in shared memory,
#: O(n log n) per line against the box DFT's O(n Kc)) for power-of-two H, W >= 2 whenever one block's shared
#: memory fits; other sizes take the box kernel or the cuFFT path. Checked against the reference under the CPU
#: emulation of CUDA (tests/test_cuda_emulated.py); its GPU speed is not measured yet (bench_spectral_loss.py
#: times it next to the forced box kernel and cuFFT path). False: box kernel / cuFFT path at every size.
CUDA_FFT_KERNEL = True
#: bands the cuda and triton kernels handle (band energies live in registers/shared memory)
MAX_KERNEL_BANDS = 8


@dataclass(frozen=True)
class DftPlan:
    """Box of rfft2 bins that holds every band but the last: ``rows`` (ky indices) x ``kx < Kc``."""

    H: int
    W: int
    cutoffs: tuple[float, ...]
    rows: tuple[int, ...]
    Kc: int

    @property
    def Kr(self) -> int:
        return len(self.rows)

    @property
    def nb(self) -> int:
        return len(self.cutoffs) + 1

    @property
    def fraction(self) -> float:
        return self.Kr * self.Kc / (self.H * (self.W // 2 + 1))


@lru_cache(maxsize=128)
def dft_plan(H: int, W: int, cutoffs: tuple[float, ...]) -> DftPlan:
    """The smallest row/column box holding the disk ``r <= cutoffs[-1]`` (checked against ``band_index``)."""
    cmax = cutoffs[-1] * (1 + 1e-9)
    kc = min(int(math.floor(cmax * W)), W // 2)  # largest kx with kx / W <= cutoff (to band_index's tolerance)
    kr = int(math.floor(cmax * H))
    rows = tuple(range(H)) if 2 * kr + 1 >= H else tuple(range(kr + 1)) + tuple(range(H - kr, H))
    idx = band_index(H, W, cutoffs).clone()
    last = len(cutoffs)
    idx[list(rows), : kc + 1] = last
    if bool((idx != last).any()):  # pragma: no cover - guards the box arithmetic above
        raise AssertionError(f"spectral_loss: DFT box misses low-band bins for H={H}, W={W}, cutoffs={cutoffs}")
    return DftPlan(H, W, cutoffs, rows, kc + 1)


_TABLES: dict[tuple, tuple[torch.Tensor, ...]] = {}


def dft_tables(plan: DftPlan, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """``(cc, sc, cr, sr, bidx)``: cos/sin tables ``(Kc, W)`` and ``(Kr, H)`` in ``dtype``, band of each box bin
    ``(Kr, Kc)`` int32 (from ``band_index``). Cached per plan, device and dtype."""
    key = (plan, str(device), dtype)
    hit = _TABLES.get(key)
    if hit is not None:
        return hit
    H, W = plan.H, plan.W
    j = torch.arange(plan.Kc, dtype=torch.int64)
    ky = torch.tensor(plan.rows, dtype=torch.int64)
    ang_c = (2 * math.pi / W) * ((j[:, None] * torch.arange(W)[None, :]) % W).to(torch.float64)
    ang_r = (2 * math.pi / H) * ((ky[:, None] * torch.arange(H)[None, :]) % H).to(torch.float64)
    bidx = band_index(H, W, plan.cutoffs)[ky][:, : plan.Kc].to(torch.int32)
    out = tuple(
        x.to(device=device, dtype=dtype).contiguous() for x in (ang_c.cos(), ang_c.sin(), ang_r.cos(), ang_r.sin())
    ) + (bidx.to(device).contiguous(),)
    if len(_TABLES) > 256:
        _TABLES.clear()
    _TABLES[key] = out
    return out


@lru_cache(maxsize=256)
def _band_norms(H: int, W: int, cuts: tuple[float, ...], numel: int, reduction: str) -> tuple[float, ...]:
    """Divisor of each band's energy: numel ("mean") or bins x leading size ("band_mean"); 0 marks an
    empty band, whose term is exactly 0 (its residual energy is rounding noise, not signal)."""
    counts = band_bin_counts(H, W, cuts).tolist()
    n_lead = numel // (H * W)
    return tuple((float(numel) if reduction == "mean" else float(c) * n_lead) if c > 0 else 0.0 for c in counts)


@lru_cache(maxsize=256)
def _fixed_gains(weights: tuple[float, ...], norms: tuple[float, ...], device: str, dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(
        [w / max(n, 1.0) if n > 0 else 0.0 for w, n in zip(weights, norms)], dtype=torch.float64, device=device
    ).to(dtype)


def _gains(weights, norms, ref: torch.Tensor | None, eps: float, device, dtype=torch.float64) -> torch.Tensor:
    """Per-band gains ``c_b`` (computed in float64, returned in ``dtype`` on ``device``): loss = sum_b c_b E_b
    for raw energies E_b.

    Without ``ref`` (fixed weighting) they depend on the call's constants only: cached per device and dtype,
    so a training step pays no host-to-device copy or cast for them.
    """
    if ref is None:
        return _fixed_gains(tuple(weights), tuple(norms), str(device), dtype)
    # adaptive: divide by the teacher's (detached) normalised band energy + eps; the constants are cached
    # on the device (a host-to-device copy per step would synchronise on CUDA)
    c = _fixed_gains(tuple(weights), tuple(norms), str(device), torch.float64)
    inv = _fixed_gains((1.0,) * len(norms), tuple(norms), str(device), torch.float64)
    return (c / (ref.to(torch.float64) * inv + eps)).to(dtype)


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


def _ptr(x: torch.Tensor | None) -> int:
    """A tensor's data pointer for the extension; 0 for an absent (optional) buffer."""
    return 0 if x is None else x.data_ptr()


def _energies_buffer(nb: int, device: torch.device, with_loss: bool) -> torch.Tensor:
    """Band energies for a cuda/cpu kernel: zeroed here, or (``with_loss``, cuda) ``nb + 1`` slots that the
    extension zeroes on the stream, the last one the kernel's block counter."""
    if with_loss:
        return torch.empty(nb + 1, dtype=torch.float64, device=device)
    return torch.zeros(nb, dtype=torch.float64, device=device)


def _kernel_pass(backend: str, s, t, grad, gains, plan: DftPlan, band_mean: bool, loss=None) -> torch.Tensor:
    """Run one backend kernel on contiguous (N, H, W) ``s`` (minus ``t`` when given); raw energies, float64.

    ``loss`` (cuda only: a 0-dim tensor of the input dtype, with ``gains``): the kernel also writes the loss,
    sum_b gains[b] E_b, so the call needs no fill / reduction ops around the launch.
    """
    N, H, W = s.shape
    nb = plan.nb
    if backend == "triton":  # energies only: the loss pass is spectral_loss_fused's
        from sdkd.kernels.spectral_loss import spectral_loss_triton

        return spectral_loss_triton(s, t, None, None, dft_tables(plan, s.device, torch.float32), nb, band_mean)
    _C = extension()
    e = _energies_buffer(nb, s.device, loss is not None)
    args = (_ptr(s), _ptr(t), _ptr(grad), e.data_ptr(), _ptr(gains), _DTYPE_CODE[s.dtype], N, H, W)
    comp = torch.float64 if s.dtype == torch.float64 else torch.float32
    cc, sc, cr, sr, bidx = dft_tables(plan, s.device, comp)
    tabs = (cc.data_ptr(), sc.data_ptr(), cr.data_ptr(), sr.data_ptr(), bidx.data_ptr(), plan.Kr, plan.Kc, nb)
    if backend == "cpu":
        _C.spectral_loss_cpu(*args, *tabs, band_mean)
    else:
        _C.spectral_loss_cuda(*args, *tabs, band_mean, _raw_stream(s.device), _ptr(loss))
    return e[:nb]


def _raw_stream(device: torch.device) -> int:
    """The current CUDA stream of ``device`` as an integer handle (the private accessor torch's own compiled code
    uses when present: a fraction of ``torch.cuda.current_stream``'s cost)."""
    raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
    if raw is not None and device.index is not None:
        return raw(device.index)
    return torch.cuda.current_stream(device).cuda_stream


_DTYPE_CODE = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}


def _cuda_fft_ok(plan: DftPlan, dtype: torch.dtype, device: torch.device, band_mean: bool) -> bool:
    """Whether the cuda backend's FFT kernel takes this call: powers of two and the block fits (CUDA_FFT_KERNEL)."""
    return CUDA_FFT_KERNEL and _is_pow2(plan.H) and _is_pow2(plan.W) and _cuda_fft_fits(plan, dtype, device, band_mean)


@lru_cache(maxsize=256)
def _cuda_fft_fits(plan: DftPlan, dtype: torch.dtype, device: torch.device, band_mean: bool) -> bool:
    """The block's shared memory fits the device: with x kept in it, or ("mean" only) the variant reading x again
    (e.g. 128 x 256 float32, or 128 x 128 with three bands)."""
    _C = extension()
    if plan.H < 2 or plan.W < 2 or not hasattr(_C, "spectral_loss_cuda_fft"):
        return False
    limit = _cuda_smem_limit(torch.device(device))
    need = [_C.spectral_loss_cuda_fft_smem(_DTYPE_CODE[dtype], plan.H, plan.W, plan.Kc, plan.nb, True, keep)
            for keep in ((True,) if band_mean else (True, False))]  # fmt: skip
    return min(need) <= limit


@lru_cache(maxsize=64)
def _device_band_map(plan: DftPlan, device: torch.device) -> torch.Tensor:
    return band_map(plan).to(device)


def _cuda_fft_pass(s, t, grad, gains, plan: DftPlan, band_mean: bool, loss=None) -> torch.Tensor:
    """The cuda FFT kernel on contiguous (N, H, W) ``s`` (minus ``t``): raw energies, float64 (as ``_kernel_pass``;
    with ``loss`` and ``gains`` the kernel writes the loss too)."""
    N, H, W = s.shape
    nb = plan.nb
    e = _energies_buffer(nb, s.device, loss is not None)
    extension().spectral_loss_cuda_fft(
        _ptr(s), _ptr(t), _ptr(grad), e.data_ptr(), _ptr(gains), _DTYPE_CODE[s.dtype], N, H, W,
        _device_band_map(plan, s.device).data_ptr(), plan.Kc, nb, band_mean, _raw_stream(s.device), _ptr(loss),
    )  # fmt: skip
    return e[:nb]


def _cpu_fft_fused(s, t, plan: DftPlan, norms, weights, band_mean: bool, adaptive: bool, eps: float):
    """``spectral_loss_fused`` on the cpu backend's real-FFT kernel, with as few tensor ops as possible around it
    (their cost is a sizeable part of a call at these sizes): the kernel reads the inputs in place and writes the
    loss itself."""
    _C = extension()
    H, W, nb, code = plan.H, plan.W, plan.nb, _DTYPE_CODE[s.dtype]
    s = s if s.is_contiguous() else s.contiguous()
    t = t if t.is_contiguous() else t.contiguous()
    N = s.numel() // (H * W)
    bmap = band_map(plan).data_ptr()
    ref = None
    if adaptive:  # the teacher's band energies first (no gradient)
        ref = torch.zeros(nb, dtype=torch.float64)
        _C.spectral_loss_cpu_fft(t.data_ptr(), 0, 0, ref.data_ptr(), 0, code, N, H, W, bmap, plan.Kc, nb, band_mean)
    gains = _gains(weights, norms, ref, eps, s.device)
    grad = torch.empty_like(s)
    loss = torch.empty((), dtype=s.dtype)
    args = (s.data_ptr(), t.data_ptr(), grad.data_ptr(), 0, gains.data_ptr(), code, N, H, W, bmap, plan.Kc, nb)
    _C.spectral_loss_cpu_fft(*args, band_mean, loss.data_ptr())
    return loss, grad


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _cpu_fft_ok(H: int, W: int) -> bool:
    """Whether the cpu backend's own real-FFT kernel takes (H, W): any H, W >= 8 (8-lane vectors along rows);
    builds older than the mixed-radix transforms take powers of two only."""
    return CPU_FFT_KERNEL and _cpu_fft_size_ok(H, W)


@lru_cache(maxsize=256)
def _cpu_fft_size_ok(H: int, W: int) -> bool:
    ext = extension()
    if W < 8 or not hasattr(ext, "spectral_loss_cpu_fft"):
        return False
    return (_is_pow2(H) and _is_pow2(W)) or bool(getattr(ext, "spectral_loss_cpu_fft_any_size", False))


@lru_cache(maxsize=128)
def band_map(plan: DftPlan) -> torch.Tensor:
    """Band of every bin with ``kx < Kc``, ``(H, Kc)`` int32 contiguous (CPU): the FFT kernel's mask."""
    return band_index(plan.H, plan.W, plan.cutoffs)[:, : plan.Kc].to(torch.int32).contiguous()


def box_macs(plan: DftPlan) -> int:
    """Multiply-adds of the box kernel per slice: forward and inverse, rows (H W Kc, two real outputs) and
    columns (Kr Kc H, complex)."""
    return 2 * (2 * plan.H * plan.W * plan.Kc + 4 * plan.Kr * plan.Kc * plan.H)


@lru_cache(maxsize=16)
def _cuda_smem_limit(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).shared_memory_per_block_optin


def _kernel_fits(backend: str, plan: DftPlan, dtype: torch.dtype, device: torch.device) -> bool:
    """Whether the box kernel takes this plan (else the backend uses the FFT path)."""
    if plan.fraction > DFT_MAX_FRACTION:
        return False
    if backend == "cpu":
        return plan.Kc * (1 + plan.Kr / plan.W) <= CPU_BOX_MAX_COST
    if backend in ("cuda", "triton") and box_macs(plan) > GPU_BOX_MAX_SLICE_MACS:
        return False  # cuFFT is cheaper than the box DFT for slices this large (see GPU_BOX_MAX_SLICE_MACS)
    if backend == "triton":  # slice size and the compiled kernel's shared memory vs the device's (cached)
        from sdkd.kernels.spectral_loss import kernel_fits

        return kernel_fits(plan.H, plan.W, plan.Kr, plan.Kc, plan.nb, dtype, device)
    if backend == "cuda":
        return _cuda_box_fits(plan, dtype, device)
    return True


@lru_cache(maxsize=256)
def _cuda_box_fits(plan: DftPlan, dtype: torch.dtype, device: torch.device) -> bool:
    """Whether one CUDA block's shared memory for this plan fits the device's (cached: asked on every call)."""
    need = extension().spectral_loss_cuda_smem(_DTYPE_CODE[dtype], plan.H, plan.W, plan.Kr, plan.Kc, plan.nb)
    return need <= _cuda_smem_limit(torch.device(device))


def spectral_loss_fused(
    s: torch.Tensor,
    t: torch.Tensor,
    cutoffs: Sequence[float],
    weights: Sequence[float],
    reduction: str,
    adaptive: bool,
    eps: float,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss (0-dim, input dtype) and d loss / d s (shape and dtype of ``s``) from one fused backend.

    Arguments are already validated (``normalize_args``); ``d loss / d t = -d loss / d s``.
    """
    if s.is_cuda and s.device.index != torch.cuda.current_device():  # the kernels launch on the current device
        with torch.cuda.device(s.device):
            return spectral_loss_fused(s, t, cutoffs, weights, reduction, adaptive, eps, backend)
    cuts = tuple(cutoffs)
    H, W = s.shape[-2:]
    band_mean = reduction == "band_mean"
    norms = _band_norms(H, W, cuts, s.numel(), reduction)
    plan = dft_plan(H, W, cuts)
    if backend == "cpu" and _cpu_fft_ok(H, W):
        return _cpu_fft_fused(s, t, plan, norms, weights, band_mean, adaptive, eps)
    s3 = s.detach().reshape(-1, H, W).contiguous()
    t3 = t.detach().reshape(-1, H, W).contiguous()
    if backend == "cuda" and _cuda_fft_ok(plan, s.dtype, s.device, band_mean):  # one launch, it writes the loss
        ref = _cuda_fft_pass(t3, None, None, None, plan, band_mean) if adaptive else None
        gains = _gains(weights, norms, ref, eps, s.device)
        grad = torch.empty_like(s3)
        loss = s.new_empty(())
        _cuda_fft_pass(s3, t3, grad, gains, plan, band_mean, loss=loss)
        return loss, grad.view(s.shape)
    if _kernel_fits(backend, plan, s.dtype, s.device):
        ref = _kernel_pass(backend, t3, None, None, None, plan, band_mean) if adaptive else None
        gains = _gains(weights, norms, ref, eps, s.device, torch.float32 if backend == "triton" else torch.float64)
        grad = torch.empty_like(s3)
        if backend == "cuda":  # one launch: the kernel writes the loss too
            loss = s.new_empty(())
            _kernel_pass(backend, s3, t3, grad, gains, plan, band_mean, loss=loss)
            return loss, grad.view(s.shape)
        if backend == "triton":  # the kernel writes each slice's share of the loss
            from sdkd.kernels.spectral_loss import spectral_loss_triton

            tables = dft_tables(plan, s.device, torch.float32)
            loss = spectral_loss_triton(s3, t3, grad, gains, tables, plan.nb, band_mean)
            return loss.to(s.dtype), grad.view(s.shape)
        e = _kernel_pass(backend, s3, t3, grad, gains, plan, band_mean)  # cpu box kernel: energies on the host
    else:  # the cutoff keeps most bins (or the slice is large): one rfft2 + one irfft2 beat the box transform
        acc = torch.float64 if s.dtype == torch.float64 else torch.float32
        if adaptive:
            ref = _fft_energies(t3.to(acc), cuts, band_mean)
            maps = _fft_maps(H, W, cuts, _gains(weights, norms, ref, eps, s.device), band_mean, acc)
        else:
            maps = _fixed_fft_maps(H, W, cuts, tuple(weights), norms, band_mean, s.device, acc)
        x = s3 - t3 if s.dtype == acc else s3.to(acc) - t3.to(acc)
        loss, grad = _fft_loss_grad(x, maps)
        return loss.to(s.dtype), grad.to(s.dtype).view(s.shape)
    loss = (gains.to(e.dtype) * e).sum().to(s.dtype)  # tensor ops, not floats: no host read per step
    return loss, grad.to(s.dtype).reshape(s.shape)


# ----------------------------------------------------------------------------- custom op + autograd
@torch.library.custom_op("sdkd::spectral_loss_fwd", mutates_args=())
def spectral_loss_fwd(
    s: torch.Tensor,
    t: torch.Tensor,
    cutoffs: list[float],
    weights: list[float],
    reduction: str,
    adaptive: bool,
    eps: float,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, dloss/ds)`` from the fused ``backend`` ("cpu", "cuda" or "triton")."""
    return spectral_loss_fused(s, t, cutoffs, weights, reduction, adaptive, eps, backend)


@spectral_loss_fwd.register_fake
def _spectral_loss_fwd_fake(s, t, cutoffs, weights, reduction, adaptive, eps, backend):
    return s.new_empty(()), s.new_empty(s.shape)


def _setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(output[1])


def _scaled_grads(g: torch.Tensor, grad_loss: torch.Tensor, needs_t: bool, owned: bool = False) -> tuple:
    """Backward of both autograd paths: dloss/ds was computed in forward, scale it (in place when the caller
    ``owned`` ``g``); dloss/dt = -dloss/ds."""
    if owned and grad_loss.numel() == 1:  # no "grad_loss == 1" shortcut: deciding it is a host read
        gs = g.mul_(grad_loss.to(g.dtype))
    else:
        gs = g * grad_loss.to(g.dtype)
    gt = -gs if needs_t else None
    return gs, gt, None, None, None, None, None, None


def _spectral_loss_bwd(ctx, grad_loss, grad_grad):
    (g,) = ctx.saved_tensors
    return _scaled_grads(g, grad_loss, ctx.needs_input_grad[1])


spectral_loss_fwd.register_autograd(_spectral_loss_bwd, setup_context=_setup_context)


class _SpectralLossEager(torch.autograd.Function):
    """The custom op's forward and backward without the torch.library dispatch (eager calls only): the same
    ``spectral_loss_fused``, a fraction of the per-call overhead.

    The gradient computed in forward is handed over to autograd in backward (not kept in ``ctx``), so
    ``AccumulateGrad`` can adopt it instead of copying it. A second backward through the same graph
    (``retain_graph=True``) recomputes it from the saved inputs.
    """

    @staticmethod
    def forward(ctx, s, t, cutoffs, weights, reduction, adaptive, eps, backend):
        loss, grad = spectral_loss_fused(s, t, cutoffs, weights, reduction, adaptive, eps, backend)
        ctx.save_for_backward(s, t)
        ctx.args = (cutoffs, weights, reduction, adaptive, eps, backend)
        ctx.grad = grad
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        g, ctx.grad = ctx.grad, None
        if g is None:  # backward through this graph again: the forward's gradient was handed over
            s, t = ctx.saved_tensors
            g = spectral_loss_fused(s.detach(), t.detach(), *ctx.args)[1]
        return _scaled_grads(g, grad_loss, ctx.needs_input_grad[1], owned=True)


def _fused_fn(backend: str):
    def fn(s, t, cutoffs, weights, reduction="mean", adaptive=False, eps=1e-6):
        if plain_eager(s, t):
            return _SpectralLossEager.apply(
                s, t, tuple(cutoffs), tuple(weights), reduction, adaptive, float(eps), backend
            )
        return spectral_loss_fwd(s, t, list(cutoffs), list(weights), reduction, adaptive, float(eps), backend)[0]

    fn.__name__ = f"spectral_loss_{backend}"
    return fn


# ----------------------------------------------------------------------------- dispatch
_FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _reference_reasons(**_: object) -> list[str]:
    return []


def _cpu_reasons(s=None, cutoffs=(), **_: object) -> list[str]:
    # every size: its real-FFT kernel (W >= 8, ~5x the reference), else the box kernel for small boxes or
    # the torch.fft path with the loss folded in (1.4-2.4x the reference, see CPU_BOX_MAX_COST)
    why = [r for r in [unavailable_reason("spectral_loss_cpu")] if r]
    if s is not None:
        if not s.is_cpu:
            why.append(f"needs CPU tensors, got {s.device}")
        if s.dtype not in (torch.float32, torch.float64):
            why.append(f"dtype {s.dtype} not supported (float32, float64)")
    return why


def _cuda_reasons(s=None, cutoffs=(), **_: object) -> list[str]:
    why = [r for r in [unavailable_reason("spectral_loss_cpu"), cuda_unavailable_reason()] if r][:1]
    if s is not None:
        if s.device.type != "cuda":
            why.append(f"needs CUDA tensors, got {s.device}")
        if s.dtype not in _FLOAT_DTYPES:
            why.append(f"dtype {s.dtype} not supported")
        if len(cutoffs) + 1 > MAX_KERNEL_BANDS:
            why.append(f"at most {MAX_KERNEL_BANDS} bands, got {len(cutoffs) + 1}")
    return why


def _triton_reasons(s=None, cutoffs=(), interpret_ok: bool = False, **_: object) -> list[str]:
    if not triton_installed():
        return ["triton is not installed"]
    why = []
    if s is None and not torch.cuda.is_available():
        why.append("no CUDA GPU (Triton runs on CPU only under TRITON_INTERPRET=1)")
    if s is not None:
        if s.device.type == "cpu":
            if os.environ.get("TRITON_INTERPRET") != "1":
                why.append("needs CUDA tensors (CPU tensors only under TRITON_INTERPRET=1)")
            elif not interpret_ok:
                why.append("CPU tensors run in the Triton interpreter only when backend='triton' is requested")
        elif s.device.type != "cuda":
            why.append(f"needs CUDA tensors, got {s.device}")
        if s.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            why.append(f"dtype {s.dtype} not supported (float32, float16, bfloat16)")
        if len(cutoffs) + 1 > MAX_KERNEL_BANDS:
            why.append(f"at most {MAX_KERNEL_BANDS} bands, got {len(cutoffs) + 1}")
    return why


def _auto_key(s=None, cutoffs=(), interpret_ok: bool = False, **_: object):
    """What every backend's probe above reads: device, dtype, band count, the interpreter switches."""
    if s is None:
        return None
    return s.device, s.dtype, len(cutoffs), interpret_ok, os.environ.get("TRITON_INTERPRET")


# Priority: the C++/CUDA kernels first (no JIT warm-up, float64 support, CUDA also fp16/bf16), Triton
# next on GPU, the plain-PyTorch reference last. On CPU tensors: cpu (its real-FFT kernel; other sizes
# only when asked for), then reference.
spectral_loss_op = register_op(
    Op(
        name="spectral_loss",
        backends=[
            Backend("cuda", _fused_fn("cuda"), _cuda_reasons, "CUDA fused loss + gradient (sdkd._C)"),
            Backend("triton", _fused_fn("triton"), _triton_reasons, "Triton fused loss + gradient"),
            Backend("cpu", _fused_fn("cpu"), _cpu_reasons, "C++/OpenMP fused loss + gradient (sdkd._C)"),
            Backend("reference", spectral_loss_reference, _reference_reasons, "torch.fft.rfft2 + autograd"),
        ],
        auto_key=_auto_key,
    )
)


def spectral_loss(
    s: torch.Tensor,
    t: torch.Tensor,
    cutoffs: float | Sequence[float] = 0.25,
    weights: Sequence[float] | None = None,
    reduction: str = "mean",
    adaptive: bool = False,
    eps: float = 1e-6,
    backend: str = "auto",
    check: bool = True,
) -> torch.Tensor:
    """SpectralKD loss between student ``s`` and teacher ``t`` of shape ``(..., H, W)``.

    ``cutoffs``: increasing radial cutoffs (cycles/sample) splitting the rfft2 half-plane into
    ``len(cutoffs)+1`` bands; ``weights``: one per band (default all 1, where ``mean`` equals
    ``mse_loss(s, t)``); ``reduction``: ``"mean"`` or ``"band_mean"``; ``adaptive``: divide each
    band's error by the teacher's (detached) energy in it plus ``eps``. ``backend``: ``"auto"``
    (or ``SDKD_BACKEND``), ``"cpu"``, ``"cuda"``, ``"triton"`` or ``"reference"``. ``check``: raise
    on non-finite results, naming the offending input.
    """
    cuts, w = normalize_args(s, t, cutoffs, weights, reduction)
    requested = backend if backend != "auto" else (os.environ.get(ENV_VAR, "").strip() or "auto")
    impl = spectral_loss_op.select(
        backend,
        s=s,
        t=t,
        cutoffs=cuts,
        weights=w,
        reduction=reduction,
        adaptive=adaptive,
        interpret_ok=requested == "triton",
        requested=requested,
    )
    loss = impl.fn(s, t, cuts, w, reduction, adaptive, eps)
    if check:
        check_finite(loss, s, t)
    return loss


def spectral_band_terms(
    s: torch.Tensor,
    t: torch.Tensor,
    cutoffs: float | Sequence[float] = 0.25,
    weights: Sequence[float] | None = None,
    reduction: str = "mean",
    adaptive: bool = False,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Detached per-band terms (their sum is the loss), for logging."""
    cuts, w = normalize_args(s, t, cutoffs, weights, reduction)
    with torch.no_grad():
        return band_terms_reference(s.detach(), t.detach(), cuts, w, reduction, adaptive, eps)
