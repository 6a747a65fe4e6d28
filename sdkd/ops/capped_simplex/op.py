"""Dispatch (backends, measured ``auto``), the ``torch.library`` custom ops and the public functions
``capped_simplex_projection`` and ``a2d_weights``."""

from __future__ import annotations

import math

import torch

from .._device_checks import assert_on_device
from .._dispatch import CHECK_DEFAULT, Backend, Op, Tuning, interpreter_key, plain_eager, register_op, requested_backend
from .a2d import _a2d_solve_reference, _check_gram, default_a2d_tol
from .native import (
    a2d_cpu,
    a2d_cuda,
    a2d_triton,
    cpu_reasons,
    cuda_reasons,
    projection_backward_cpu,
    projection_backward_cuda,
    projection_backward_triton,
    projection_cpu,
    projection_cuda,
    projection_triton,
    triton_reasons,
)
from .projection import (
    MAX_M,
    _as_float_C,
    _check_y,
    _compute_dtype,
    capped_simplex_projection_backward_reference,
    projection_forward_reference,
)


# ----------------------------------------------------------------------------- dispatch
def _requested(backend: str) -> str:
    return requested_backend(backend)


def _pick_key(x: torch.Tensor | None, requested: str):
    """What the probes above read: device, dtype, whether M fits, the interpreter switch."""
    if x is None:
        return None
    return x.device, x.dtype, x.dim() >= 1 and x.shape[-1] > MAX_M, *interpreter_key(requested)


def _rows_key(x: torch.Tensor, per_problem: int) -> tuple:
    """What a timing depends on beyond ``_pick_key``: the problem count (``numel / per_problem``) rounded up to a
    power of two (a short last batch reuses the pick), M, whether autograd will run."""
    rows = max(1, x.numel() // max(1, per_problem))
    return 1 << (rows - 1).bit_length(), x.shape[-1], torch.is_grad_enabled() and x.requires_grad


def _bench_projection(backend: Backend, y: torch.Tensor, C: float):
    """One projection as the caller's (forward, and the backward when autograd will run), on a detached copy."""
    grad = torch.is_grad_enabled() and y.requires_grad
    y_ = y.detach().requires_grad_(grad)

    def call() -> None:
        x = torch.ops.sdkd.capped_simplex_projection(y_, C, backend.name)
        if grad:
            x.backward(torch.ones_like(x))
            y_.grad = None

    return call


capped_simplex_op = register_op(
    Op(
        name="capped_simplex",
        backends=[
            Backend(
                "cpu",
                projection_cpu,
                lambda y=None, **_: cpu_reasons(y),
                "C++ breakpoint method, OpenMP over rows",
            ),
            Backend(
                "cuda",
                projection_cuda,
                lambda y=None, **_: cuda_reasons(y),
                "CUDA, one thread per row, y in registers",
            ),
            Backend(
                "triton",
                projection_triton,
                lambda y=None, requested="auto", **_: triton_reasons(y, requested),
                "Triton, [ROWS, M_pad] tile per program",
            ),
            Backend("reference", projection_forward_reference, lambda **_: [], "plain PyTorch"),
        ],
        auto_key=lambda y=None, requested="auto", **_: _pick_key(y, requested),
        tuning=Tuning(
            key=lambda y=None, **_: _rows_key(y, y.shape[-1]),
            bench=lambda b, y=None, C=0.5, **_: _bench_projection(b, y, C),
        ),
    )
)

_BACKWARD = {
    "cpu": projection_backward_cpu,
    "cuda": projection_backward_cuda,
    "triton": projection_backward_triton,
    "reference": capped_simplex_projection_backward_reference,
}

a2d_weights_op = register_op(
    Op(
        name="a2d_weights",
        backends=[
            Backend("cpu", a2d_cpu, lambda gram=None, **_: cpu_reasons(gram), "C++, OpenMP over problems"),
            Backend("cuda", a2d_cuda, lambda gram=None, **_: cuda_reasons(gram), "CUDA, one thread/problem"),
            Backend(
                "triton",
                a2d_triton,
                lambda gram=None, requested="auto", **_: triton_reasons(gram, requested),
                "Triton, [ROWS, M_pad, M_pad] tile per program",
            ),
            Backend("reference", _a2d_solve_reference, lambda **_: [], "plain PyTorch, batched"),
        ],
        auto_key=lambda gram=None, requested="auto", **_: _pick_key(gram, requested),
        tuning=Tuning(
            key=lambda gram=None, max_iter=1000, tol=0.0, **_: (*_rows_key(gram, gram.shape[-1] ** 2), max_iter, tol),
            bench=lambda b, gram=None, C=0.6, max_iter=1000, tol=0.0, **_: lambda: b.fn(gram, C, max_iter, tol),
        ),
    )
)


# ----------------------------------------------------------------------------- custom ops
@torch.library.custom_op("sdkd::capped_simplex_projection", mutates_args=())
def _projection_custom(y: torch.Tensor, C: float, backend: str) -> torch.Tensor:
    M = y.shape[-1]
    if y.numel() == 0:
        return torch.empty_like(y)
    x = capped_simplex_op.get(backend).fn(y.reshape(-1, M).contiguous(), C)
    return x.reshape(y.shape)


@_projection_custom.register_fake
def _(y: torch.Tensor, C: float, backend: str) -> torch.Tensor:
    return torch.empty_like(y)


@torch.library.custom_op("sdkd::capped_simplex_projection_backward", mutates_args=())
def _projection_backward_custom(x: torch.Tensor, g: torch.Tensor, C: float, backend: str) -> torch.Tensor:
    M = x.shape[-1]
    if x.numel() == 0:
        return torch.empty_like(g)
    fn = _BACKWARD[backend]
    gx = fn(x.reshape(-1, M).contiguous(), g.reshape(-1, M).contiguous().to(x.dtype), C)
    return gx.reshape(x.shape).to(g.dtype)


@_projection_backward_custom.register_fake
def _(x: torch.Tensor, g: torch.Tensor, C: float, backend: str) -> torch.Tensor:
    return torch.empty_like(g)


def _projection_setup_context(ctx, inputs, output) -> None:
    _, C, backend = inputs
    ctx.C, ctx.backend = C, backend
    ctx.save_for_backward(output)


def _projection_autograd(ctx, g: torch.Tensor):
    (x,) = ctx.saved_tensors
    return torch.ops.sdkd.capped_simplex_projection_backward(x, g, ctx.C, ctx.backend), None, None


_projection_custom.register_autograd(_projection_autograd, setup_context=_projection_setup_context)


def _a2d_run(
    gram: torch.Tensor, C: float, max_iter: int, tol: float, backend: str
) -> tuple[torch.Tensor, torch.Tensor]:
    B, M, _ = gram.shape
    if B == 0:
        return gram.new_empty(0, M), gram.new_empty(0)
    alpha, res = a2d_weights_op.get(backend).fn(gram.contiguous(), C, max_iter, tol)
    return alpha, res


@torch.library.custom_op("sdkd::a2d_weights", mutates_args=())
def _a2d_custom(
    gram: torch.Tensor, C: float, max_iter: int, tol: float, backend: str
) -> tuple[torch.Tensor, torch.Tensor]:
    return _a2d_run(gram, C, max_iter, tol, backend)


@_a2d_custom.register_fake
def _(gram: torch.Tensor, C: float, max_iter: int, tol: float, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    B, M, _ = gram.shape
    return gram.new_empty(B, M), gram.new_empty(B)


# ----------------------------------------------------------------------------- public API
def capped_simplex_projection(
    y: torch.Tensor, C: float | torch.Tensor, *, backend: str = "auto", check: bool = CHECK_DEFAULT
) -> torch.Tensor:
    """Euclidean projection of every row of ``y: (..., M)`` onto ``{x : sum x = 1, 0 <= x <= C}``.

    Exact (breakpoint method) and feasible for every finite input (``sum x = 1`` within ``M`` ulp,
    ``0 <= x <= C`` exactly, however far apart the entries are), ``M <= 64`` on the fast backends (the reference takes any ``M``),
    float32/float64 (half inputs fall back to the reference, computed in float32). Differentiable
    with the closed-form backward. Requires ``C > 0`` and ``C * M >= 1``; ``check`` rejects
    non-finite ``y`` (asserted on the device, no host read: on the CPU a ``ValueError``, on CUDA a
    device-side assert). ``backend``: ``"auto"``, ``"cpu"``, ``"cuda"``,
    ``"triton"`` or ``"reference"``.
    """
    who = "capped_simplex_projection"
    C = _as_float_C(C, who)
    _check_y(y, C, check, who)
    impl = capped_simplex_op.select(backend, y=y, C=C, requested=_requested(backend))
    return torch.ops.sdkd.capped_simplex_projection(y, C, impl.name)


def a2d_weights(
    gram: torch.Tensor,
    C: float | torch.Tensor = 0.6,
    *,
    max_iter: int = 1000,
    tol: float | None = None,
    backend: str = "auto",
    check: bool = CHECK_DEFAULT,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A2D teacher weights ``argmin_a 1/2 a^T G a`` s.t. ``sum a = 1, 0 <= a <= C``, one QP per Gram matrix.

    ``gram``: ``(B, M, M)`` (or ``(M, M)``), symmetric PSD, float32/float64 (half is solved in
    float32). Returns ``(alpha, kkt_residual)`` of shapes ``(B, M)`` and ``(B,)`` (no batch dim for
    a 2-D ``gram``); ``kkt_residual`` is the max-norm projected-gradient step at ``alpha`` with ``G``
    scaled to unit curvature bound (see module docstring), ``<= tol`` unless ``max_iter`` ran out.
    ``tol=None``: :func:`default_a2d_tol`. ``check`` rejects non-finite, non-symmetric (relative
    1e-3 in float32, 1e-10 in float64) or non-PSD input without a host read (asserted on the device:
    on the CPU a ``ValueError`` naming the problem, on CUDA a device-side assert). ``alpha`` is not
    differentiable (A2D treats it as a constant).
    """
    who = "a2d_weights"
    C = _as_float_C(C, who)
    if not isinstance(gram, torch.Tensor):
        raise TypeError(f"{who}: gram must be a tensor, got {type(gram).__name__}")
    squeeze = gram.dim() == 2
    g3 = gram.detach()[None] if squeeze else gram.detach()
    _check_gram(g3, C, check, who)
    if not isinstance(max_iter, int) or max_iter < 0:
        raise ValueError(f"{who}: max_iter must be an int >= 0, got {max_iter!r}")
    if g3.dtype != _compute_dtype(g3.dtype):  # .to() costs a few us even as a no-op
        g3 = g3.to(_compute_dtype(g3.dtype))
    tol = default_a2d_tol(g3.dtype) if tol is None else float(tol)
    if not math.isfinite(tol) or tol < 0:
        raise ValueError(f"{who}: tol must be finite and >= 0, got {tol}")
    impl = a2d_weights_op.select(backend, gram=g3, C=C, max_iter=max_iter, tol=tol, requested=_requested(backend))
    if plain_eager(g3):  # alpha is not differentiable: skip the custom-op dispatch (tens of us a call)
        alpha, res = _a2d_run(g3, C, max_iter, tol, impl.name)
    else:
        alpha, res = torch.ops.sdkd.a2d_weights(g3, C, max_iter, tol, impl.name)
    if check and alpha.numel():  # defensive: never hand out NaN weights (asserted on the device)
        assert_on_device(torch.isfinite(alpha), f"{who}: the {impl.name} backend produced non-finite weights")
    if squeeze:
        return alpha[0], res[0]
    return alpha, res


def a2d_weights_reference(
    gram: torch.Tensor, C: float = 0.6, *, max_iter: int = 1000, tol: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain-PyTorch A2D weights; see :func:`a2d_weights`."""
    return a2d_weights(gram, C, max_iter=max_iter, tol=tol, backend="reference")
