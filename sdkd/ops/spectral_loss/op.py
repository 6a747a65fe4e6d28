"""The ``spectral_loss`` op: its backends' availability probes, their registration with the dispatcher, and the
public entry points ``spectral_loss`` and ``spectral_band_terms``."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from .._dispatch import ENV_VAR, Backend, Op, register_op
from .._ext import cuda_unavailable_reason, triton_installed, unavailable_reason
from .definition import band_terms_reference, check_finite, normalize_args, spectral_loss_reference
from .fused import _fused_fn
from .plan import MAX_KERNEL_BANDS

# ----------------------------------------------------------------------------- dispatch
_FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _reference_reasons(**_: object) -> list[str]:
    return []


def _cpu_reasons(s=None, cutoffs=(), **_: object) -> list[str]:
    # every size: its real-FFT kernel (powers of two, ~5x the reference), else the box kernel for small boxes or
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
