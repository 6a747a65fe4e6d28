"""The ``spectral_loss`` op: its backends' availability probes, their registration with the dispatcher, and the
public entry points ``spectral_loss`` and ``spectral_band_terms``."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .._dispatch import (
    CHECK_DEFAULT,
    Backend,
    Op,
    Tuning,
    interpreter_key,
    register_op,
    requested_backend,
    triton_reasons,
)
from .._ext import cuda_device_unavailable_reason, cuda_unavailable_reason, unavailable_reason
from ..spectral_cutoffs import check_bands
from .definition import band_terms_reference, check_finite, normalize_args, spectral_loss_reference
from .fused import _fused_fn
from .plan import MAX_KERNEL_BANDS, dft_plan, runnable_paths

# ----------------------------------------------------------------------------- dispatch
_FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _reference_reasons(**_: object) -> list[str]:
    return []


def _cpu_reasons(s=None, cutoffs=(), **_: object) -> list[str]:
    # every size: its real-FFT kernel (W >= 8, ~5x the reference), else the box kernel for small boxes or
    # the torch.fft path with the loss folded in (1.4-2.4x the reference, see StaticOrder.cpu_box_max_cost)
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
        elif not why and (arch := cuda_device_unavailable_reason(s.device)):
            why.append(arch)  # a GPU older than every compiled arch: fall back instead of failing at launch
        if s.dtype not in _FLOAT_DTYPES:
            why.append(f"dtype {s.dtype} not supported")
        if len(cutoffs) + 1 > MAX_KERNEL_BANDS:
            why.append(f"at most {MAX_KERNEL_BANDS} bands, got {len(cutoffs) + 1}")
    return why


def _triton_reasons(s=None, cutoffs=(), requested: str = "auto", **_: object) -> list[str]:
    why = triton_reasons(s, requested)
    if s is not None and why != ["triton is not installed"]:
        if s.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            why.append(f"dtype {s.dtype} not supported (float32, float16, bfloat16)")
        if len(cutoffs) + 1 > MAX_KERNEL_BANDS:
            why.append(f"at most {MAX_KERNEL_BANDS} bands, got {len(cutoffs) + 1}")
    return why


def _auto_key(s=None, cutoffs=(), requested: str = "auto", **_: object):
    """What every backend's probe above reads: device, dtype, band count, the Triton interpreter rule's inputs."""
    if s is None:
        return None
    return s.device, s.dtype, len(cutoffs), *interpreter_key(requested)


def _paths(backend: str):
    """The internal paths ``backend`` offers for a call (``plan.runnable_paths``); all of them without inputs."""

    def paths(s=None, cutoffs=(), reduction="mean", **_: object) -> list[str]:
        if s is None:
            return []
        plan = dft_plan(s.shape[-2], s.shape[-1], tuple(cutoffs))
        return runnable_paths(backend, plan, s.dtype, s.device, reduction == "band_mean")

    return paths


def _autograd_runs(s: torch.Tensor, t: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and (s.requires_grad or t.requires_grad)


def _tuning_key(s=None, t=None, cutoffs=(), reduction="mean", adaptive=False, **_: object):
    """What a timing depends on beyond ``_auto_key``: the slice size, the leading size rounded up to a power of two
    (a short last batch reuses the pick), cutoffs, options and which gradients autograd will ask for."""
    H, W = s.shape[-2:]
    lead = max(1, s.numel() // max(1, H * W))
    grads = _autograd_runs(s, t) and (s.requires_grad, t.requires_grad)
    return (1 << (lead - 1).bit_length(), H, W, tuple(cutoffs), reduction, bool(adaptive), grads)


def _bench(
    backend: Backend, s=None, t=None, cutoffs=(), weights=(), reduction="mean", adaptive=False, eps=1e-6, **_: object
):
    """One call of ``fn`` as the caller's: on detached copies sharing the inputs' memory, backward when autograd
    will run (the gradients land on the copies, never on the caller's tensors)."""
    grad = _autograd_runs(s, t)
    s_ = s.detach().requires_grad_(grad and s.requires_grad)
    t_ = t.detach().requires_grad_(grad and t.requires_grad)

    def call() -> None:
        loss = backend.fn(s_, t_, cutoffs, weights, reduction, adaptive, eps)
        if grad:
            loss.backward()
            s_.grad = t_.grad = None

    return call


# Priority: the C++/CUDA kernels first (no JIT warm-up, float64 support, CUDA also fp16/bf16), Triton
# next on GPU, the plain-PyTorch reference last. On CPU tensors: cpu (its real-FFT kernel; other sizes
# only when asked for), then reference.
spectral_loss_op = register_op(
    Op(
        name="spectral_loss",
        backends=[
            Backend("cuda", _fused_fn("cuda"), _cuda_reasons, "CUDA fused loss + gradient (sdkd._C)", _paths("cuda")),
            Backend("triton", _fused_fn("triton"), _triton_reasons, "Triton fused loss + gradient", _paths("triton")),
            Backend("cpu", _fused_fn("cpu"), _cpu_reasons, "C++/OpenMP fused loss + gradient (sdkd._C)", _paths("cpu")),
            Backend("reference", spectral_loss_reference, _reference_reasons, "torch.fft.rfft2 + autograd"),
        ],
        auto_key=_auto_key,
        tuning=Tuning(key=_tuning_key, bench=_bench),
    )
)


def _select(s, t, cuts, w, reduction, adaptive, eps, backend) -> Backend:
    return spectral_loss_op.select(
        backend,
        s=s,
        t=t,
        cutoffs=cuts,
        weights=w,
        reduction=reduction,
        adaptive=adaptive,
        eps=eps,
        requested=requested_backend(backend),
    )


def spectral_loss_backend(
    s: torch.Tensor,
    t: torch.Tensor,
    cutoffs: float | Sequence[float] = 0.25,
    weights: Sequence[float] | None = None,
    reduction: str = "mean",
    adaptive: bool = False,
    eps: float = 1e-6,
    backend: str = "auto",
) -> str:
    """The backend (``"name"`` or ``"name:path"``) ``spectral_loss`` takes for these arguments: under ``auto``
    the measured pick (timed now if this is the first call of its kind), else the static order's."""
    cuts, w = normalize_args(s, t, cutoffs, weights, reduction)
    return _select(s, t, cuts, w, reduction, adaptive, eps, backend).label


def spectral_loss(
    s: torch.Tensor,
    t: torch.Tensor,
    cutoffs: float | Sequence[float] = 0.25,
    weights: Sequence[float] | None = None,
    reduction: str = "mean",
    adaptive: bool = False,
    eps: float = 1e-6,
    backend: str = "auto",
    check: bool = CHECK_DEFAULT,
) -> torch.Tensor:
    """SpectralKD loss between student ``s`` and teacher ``t`` of shape ``(..., H, W)``.

    ``cutoffs``: increasing radial cutoffs (cycles/sample, in ``[0, sqrt(0.5))``) splitting the rfft2
    half-plane into ``len(cutoffs)+1`` bands, each holding at least one bin of the ``H x W`` grid (else
    ``ValueError``: an empty band would silently turn the loss into a re-weighted MSE); ``weights``: one per band (default all 1, where ``mean`` equals
    ``mse_loss(s, t)``); ``reduction``: ``"mean"`` or ``"band_mean"``; ``adaptive``: divide each
    band's error by the teacher's (detached) energy in it plus ``eps``. ``backend``: ``"auto"``
    (measured on the first call of each input kind, or ``SDKD_BACKEND``; see the README's kernel section),
    ``"cpu"``, ``"cuda"``, ``"triton"`` or ``"reference"``, optionally with an internal path of the fused
    backends (``"cpu:box"``; paths ``fft_kernel``, ``box``, ``torch_fft``). ``check``: raise on non-finite
    results, naming the offending input.
    """
    cuts, w = normalize_args(s, t, cutoffs, weights, reduction)
    check_bands(s.shape[-2], s.shape[-1], cuts, "spectral_loss")  # every band holds a bin of this grid
    impl = _select(s, t, cuts, w, reduction, adaptive, eps, backend)
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
    check_bands(s.shape[-2], s.shape[-1], cuts, "spectral_loss")  # every band holds a bin of this grid
    with torch.no_grad():
        return band_terms_reference(s.detach(), t.detach(), cuts, w, reduction, adaptive, eps)
