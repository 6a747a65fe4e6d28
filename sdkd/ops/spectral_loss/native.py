"""Glue of the compiled kernels (``sdkd._C``): the cpu backend's real-FFT and box kernels, the cuda backend's
FFT and box kernels (buffers, tables, raw pointers, the current stream)."""

from __future__ import annotations

from functools import lru_cache

import torch

from .. import _ext
from .._dispatch import raw_stream as _raw_stream  # a name of this module: tests replace it
from .plan import _DTYPE_CODE, DftPlan, _gains, band_map, dft_tables


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
    _C = _ext.extension()
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


@lru_cache(maxsize=64)
def _device_band_map(plan: DftPlan, device: torch.device) -> torch.Tensor:
    return band_map(plan).to(device)


def _cuda_fft_pass(s, t, grad, gains, plan: DftPlan, band_mean: bool, loss=None) -> torch.Tensor:
    """The cuda FFT kernel on contiguous (N, H, W) ``s`` (minus ``t``): raw energies, float64 (as ``_kernel_pass``;
    with ``loss`` and ``gains`` the kernel writes the loss too)."""
    N, H, W = s.shape
    nb = plan.nb
    e = _energies_buffer(nb, s.device, loss is not None)
    _ext.extension().spectral_loss_cuda_fft(
        _ptr(s), _ptr(t), _ptr(grad), e.data_ptr(), _ptr(gains), _DTYPE_CODE[s.dtype], N, H, W,
        _device_band_map(plan, s.device).data_ptr(), plan.Kc, nb, band_mean, _raw_stream(s.device), _ptr(loss),
    )  # fmt: skip
    return e[:nb]


def _cpu_fft_fused(s, t, plan: DftPlan, norms, weights, band_mean: bool, adaptive: bool, eps: float):
    """``spectral_loss_fused`` on the cpu backend's real-FFT kernel, with as few tensor ops as possible around it
    (their cost is a sizeable part of a call at these sizes): the kernel reads the inputs in place and writes the
    loss itself."""
    _C = _ext.extension()
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
