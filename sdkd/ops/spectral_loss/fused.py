"""The fused backends' loss + gradient (``spectral_loss_fused``: one pass on the chosen internal path) and its
autograd: a ``torch.library`` custom op for torch.compile and fake tensors, an ``autograd.Function`` for plain
eager calls (a fraction of the per-call overhead)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .._dispatch import plain_eager
from . import fft_path, native
from . import plan as _plan
from .plan import _band_norms, _gains, dft_plan, dft_tables


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

    Arguments are already validated (``normalize_args``); ``d loss / d t = -d loss / d s``. ``backend`` is
    ``"cpu"``, ``"cuda"`` or ``"triton"``, optionally with an internal path (``"cpu:box"``, one of
    ``plan.runnable_paths``); without one the static order (``plan.static_path``) chooses.
    """
    if s.is_cuda and s.device.index != torch.cuda.current_device():  # the kernels launch on the current device
        with torch.cuda.device(s.device):
            return spectral_loss_fused(s, t, cutoffs, weights, reduction, adaptive, eps, backend)
    cuts = tuple(cutoffs)
    H, W = s.shape[-2:]
    band_mean = reduction == "band_mean"
    norms = _band_norms(H, W, cuts, s.numel(), reduction)
    plan = dft_plan(H, W, cuts)
    backend, _, path = backend.partition(":")
    if not path:
        path = _plan.static_path(backend, plan, s.dtype, s.device, band_mean)
    elif path not in _plan.runnable_paths(backend, plan, s.dtype, s.device, band_mean):
        raise ValueError(f"spectral_loss: backend {backend!r} has no path {path!r} for this call")
    if backend == "cpu" and path == "fft_kernel":
        return native._cpu_fft_fused(s, t, plan, norms, weights, band_mean, adaptive, eps)
    s3 = s.detach().reshape(-1, H, W).contiguous()
    t3 = t.detach().reshape(-1, H, W).contiguous()
    if backend == "cuda" and path == "fft_kernel":  # one launch, it writes the loss
        ref = native._cuda_fft_pass(t3, None, None, None, plan, band_mean) if adaptive else None
        gains = _gains(weights, norms, ref, eps, s.device)
        grad = torch.empty_like(s3)
        loss = s.new_empty(())
        native._cuda_fft_pass(s3, t3, grad, gains, plan, band_mean, loss=loss)
        return loss, grad.view(s.shape)
    if path == "box":
        ref = native._kernel_pass(backend, t3, None, None, None, plan, band_mean) if adaptive else None
        gains = _gains(weights, norms, ref, eps, s.device, torch.float32 if backend == "triton" else torch.float64)
        grad = torch.empty_like(s3)
        if backend == "cuda":  # one launch: the kernel writes the loss too
            loss = s.new_empty(())
            native._kernel_pass(backend, s3, t3, grad, gains, plan, band_mean, loss=loss)
            return loss, grad.view(s.shape)
        if backend == "triton":  # the kernel writes each slice's share of the loss
            from sdkd.kernels.spectral_loss import spectral_loss_triton

            tables = dft_tables(plan, s.device, torch.float32)
            loss = spectral_loss_triton(s3, t3, grad, gains, tables, plan.nb, band_mean)
            return loss.to(s.dtype), grad.view(s.shape)
        e = native._kernel_pass(backend, s3, t3, grad, gains, plan, band_mean)  # cpu box kernel: energies on the host
    else:  # the cutoff keeps most bins (or the slice is large): one rfft2 + one irfft2 beat the box transform
        acc = torch.float64 if s.dtype == torch.float64 else torch.float32
        if adaptive:
            ref = fft_path._fft_energies(t3.to(acc), cuts, band_mean)
            maps = fft_path._fft_maps(H, W, cuts, _gains(weights, norms, ref, eps, s.device), band_mean, acc)
        else:
            maps = fft_path._fixed_fft_maps(H, W, cuts, tuple(weights), norms, band_mean, s.device, acc)
        x = s3 - t3 if s.dtype == acc else s3.to(acc) - t3.to(acc)
        loss, grad = fft_path._fft_loss_grad(x, maps)
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
    def fn(s, t, cutoffs, weights, reduction="mean", adaptive=False, eps=1e-6, path=None):
        backend_path = backend if path is None else f"{backend}:{path}"
        if plain_eager(s, t):
            return _SpectralLossEager.apply(
                s, t, tuple(cutoffs), tuple(weights), reduction, adaptive, float(eps), backend_path
            )
        return spectral_loss_fwd(s, t, list(cutoffs), list(weights), reduction, adaptive, float(eps), backend_path)[0]

    fn.__name__ = f"spectral_loss_{backend}"
    return fn
