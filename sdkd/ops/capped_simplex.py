"""Batched projection onto the capped simplex and the A2D weight QP (DESIGN.md sections 2 and 6).

``capped_simplex_projection(y, C)`` projects every row of ``y: (..., M)`` onto
``{x : sum x = 1, 0 <= x <= C}``. KKT: ``x = clip(y - tau, 0, C)`` with ``tau`` solving
``phi(tau) = sum_i clip(y_i - tau, 0, C) = 1``; ``phi`` is piecewise linear with breakpoints
``{y_i} U {y_i - C}``, so evaluating it at all ``2M`` breakpoints and interpolating linearly
between the two that bracket 1 gives ``tau`` exactly (no iteration count, no tolerance).
The projection is shift-equivariant: rows are shifted by their maximum (huge offsets cannot swallow
``C``), then, to keep entries far below the maximum apart, by the entry owning the bracket's upper
breakpoint (see ``_project_rows``); a last Newton step on the free set makes ``sum x = 1`` to a few ulp for every
finite input, and ``0 <= x <= C`` holds exactly (a clamp). Backward (closed form): on the free set
``F = {0 < x_i < C}`` the vector-Jacobian product is ``g_F - mean(g_F)``, zero elsewhere
(at kinks, measure zero, this picks the subgradient of the strict free set).

``a2d_weights(gram, C)`` solves ``min 1/2 a^T G a`` on that set for each ``G`` of a batch
``(B, M, M)`` (AEKD / Agree-to-Disagree weights). ``G`` is symmetrised and divided by a
per-problem upper bound ``L`` of its largest eigenvalue (``min(trace, max abs row sum)``
after scaling by the largest diagonal entry), so the solver is scale-free. The returned
KKT residual is ``max_i |a_i - P(a - (G/L) a)_i|``, the projected-gradient step length at the
returned ``a``: zero exactly at the optimum. ``M = 1`` is trivial, ``M = 2`` closed form,
larger ``M`` accelerated projected gradient (FISTA with gradient restart) until the residual is
``<= tol`` or ``max_iter`` steps are taken. Every backend runs the same iteration.

The plain-PyTorch functions here are the definition of correctness; ``cpu`` (C++, OpenMP),
``cuda`` and ``triton`` backends register in ``capped_simplex_op`` / ``a2d_weights_op``.
"""

from __future__ import annotations

import math

import torch

from ._device_checks import assert_on_device
from ._dispatch import Backend, Op, Tuning, interpreter_key, plain_eager, raw_stream, register_op, requested_backend
from ._dispatch import triton_reasons as shared_triton_reasons

__all__ = [
    "a2d_weights",
    "a2d_weights_reference",
    "capped_simplex_projection",
    "capped_simplex_projection_backward_reference",
    "capped_simplex_projection_reference",
    "default_a2d_tol",
]

MAX_M = 64
_SUPPORTED = (torch.float32, torch.float64)


# ----------------------------------------------------------------------------- validation
def _as_float_C(C: float | torch.Tensor, who: str) -> float:
    if isinstance(C, torch.Tensor):
        if C.numel() != 1:
            raise ValueError(f"{who}: C must be a scalar, got a tensor of shape {tuple(C.shape)}")
        C = C.item()
    try:
        C = float(C)
    except (TypeError, ValueError):
        raise TypeError(f"{who}: C must be a number, got {type(C).__name__}") from None
    if not math.isfinite(C) or C <= 0:
        raise ValueError(f"{who}: C must be a finite number > 0, got {C}")
    return C


def _check_feasible(C: float, M: int, who: str) -> None:
    # C*M >= 1 up to rounding of C itself (C = 1/M must be accepted).
    if C * M < 1 - 1e-12:
        raise ValueError(
            f"{who}: infeasible, the capped simplex {{sum x = 1, 0 <= x <= C}} is empty for C={C} and M={M} "
            f"(need C*M >= 1, i.e. C >= {1 / M:.6g})"
        )


def _check_y(y: torch.Tensor, C: float, check: bool, who: str) -> None:
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{who}: y must be a tensor, got {type(y).__name__}")
    if not y.is_floating_point():
        raise TypeError(f"{who}: y must be floating point, got {y.dtype}")
    if y.dim() < 1:
        raise ValueError(f"{who}: y must have at least 1 dim (..., M), got a 0-dim tensor")
    M = y.shape[-1]
    if M < 1:
        raise ValueError(f"{who}: the last dim of y (M) must be >= 1, got shape {tuple(y.shape)}")
    _check_feasible(C, M, who)
    if check and y.numel():

        def diagnose() -> None:
            raise ValueError(f"{who}: y contains NaN or Inf entries")

        assert_on_device(torch.isfinite(y), f"{who}: y contains NaN or Inf entries", diagnose)


# ----------------------------------------------------------------------------- reference projection
def _breakpoint_tau(v: torch.Tensor, C: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``tau`` with ``sum_i clip(v_i - tau, 0, C) = 1`` for each row of finite ``v: (n, M)`` (breakpoint method),
    and the entry owning the bracket's upper breakpoint (``v_j`` or ``v_j - C``, the first such ``j``)."""
    M = v.shape[1]
    bp = torch.cat([v, v - C], dim=1)  # (n, 2M) breakpoints of phi
    phi = (v[:, None, :] - bp[:, :, None]).clamp_(0, C).sum(-1)  # phi at every breakpoint
    ge, le = phi >= 1, phi <= 1
    t_lo = torch.where(ge, bp, -math.inf).amax(1)  # Python scalars: no host-to-device copy
    t_lo = torch.where(ge.any(1), t_lo, bp.amin(1))  # only reachable through rounding at extreme scales
    k_hi = torch.where(le, bp, math.inf).argmin(1)  # the row max always qualifies (phi = 0 there); first on ties
    t_hi = bp.gather(1, k_hi[:, None])[:, 0]
    phi_lo = (v - t_lo[:, None]).clamp(0, C).sum(1)
    phi_hi = (v - t_hi[:, None]).clamp(0, C).sum(1)
    den = phi_lo - phi_hi
    frac = torch.where(den > 0, (phi_lo - 1) / torch.where(den > 0, den, 1), 0)
    tau = torch.where(frac > 0, t_lo + frac * (t_hi - t_lo), t_lo)  # frac = 0: t_hi may be far (no 0 * inf)
    return tau, torch.where(k_hi < M, k_hi, k_hi - M)


def _shifted(y: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    big = torch.finfo(y.dtype).max
    return (y - shift[:, None]).clamp(-big, big)  # finite: no inf - inf below


def _project_rows(y: torch.Tensor, C: float) -> torch.Tensor:
    """Exact projection of the rows of a 2-D float32/float64 tensor, feasible for every finite input.

    Pass 1 shifts each row by its max (huge offsets cannot swallow ``C``) and brackets ``tau``; but far
    below the max, entries closer than the max's ulp merge, and the bracket can be wrong. Its upper
    breakpoint still belongs to an entry next to the true ``tau``, so pass 2 shifts the row by that
    entry (the differences that matter are then exact or tiny) and solves again. A last Newton step
    on the free set, ``tau += (sum x - 1) / |F|``, removes the interpolation's rounding: ``sum x = 1``
    to a few ulp, and ``0 <= x <= C`` exactly (a clamp). Rows with entries at three or more scales
    too far apart for two shifts are made feasible by ``_repair_sum``.
    """
    N, M = y.shape
    if N == 0:
        return y.clone()
    out = torch.empty_like(y)
    chunk = max(1, (1 << 22) // (2 * M * M))  # bounds the (rows, 2M, M) temporary
    for s in range(0, N, chunk):
        yc = y[s : s + chunk]
        _, anchor = _breakpoint_tau(_shifted(yc, yc.amax(1)), C)
        w = _shifted(yc, yc.gather(1, anchor[:, None])[:, 0])
        tau, _ = _breakpoint_tau(w, C)
        x = (w - tau[:, None]).clamp(0, C)
        free = ((x > 0) & (x < C)).sum(1)
        tau = torch.where(free > 0, tau + (x.sum(1) - 1) / free.clamp_min(1), tau)
        out[s : s + chunk] = _repair_sum((w - tau[:, None]).clamp(0, C), C)
    return out


def _repair_sum(x: torch.Tensor, C: float) -> torch.Tensor:
    """Feasibility guard: rows whose sum misses 1 by more than ``M`` ulp (entries at scales so far apart
    that even the second shift merges them) get the residual added to (or taken from) their entries in
    order, each within its bounds. The result is feasible, not optimal; other rows are left untouched."""
    M = x.shape[1]
    r = 1 - x.sum(1)
    need = r.abs() > M * torch.finfo(x.dtype).eps
    up = r > 0
    room = torch.where(up[:, None], C - x, x)
    before = room.cumsum(1) - room  # room of the entries before each one
    amount = (r.abs()[:, None] - before).clamp_min(0).minimum(room)
    fixed = torch.where(up[:, None], (x + amount).clamp(max=C), (x - amount).clamp_min(0))
    return torch.where(need[:, None], fixed, x)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in _SUPPORTED else torch.float32


def projection_forward_reference(y: torch.Tensor, C: float) -> torch.Tensor:
    """Forward only (no autograd), any leading shape; half inputs are computed in float32."""
    M = y.shape[-1]
    y2 = y.reshape(-1, M).to(_compute_dtype(y.dtype))
    return _project_rows(y2, C).to(y.dtype).reshape(y.shape)


def capped_simplex_projection_backward_reference(x: torch.Tensor, g: torch.Tensor, C: float) -> torch.Tensor:
    """Closed-form VJP of the projection at output ``x``: ``g - mean_F(g)`` on ``F = {0 < x < C}``, else 0."""
    acc = _compute_dtype(g.dtype)
    free = (x > 0) & (x < C)
    gf = torch.where(free, g.to(acc), 0)
    cnt = free.sum(-1, keepdim=True).clamp_min(1).to(acc)
    return torch.where(free, gf - gf.sum(-1, keepdim=True) / cnt, 0).to(g.dtype)


class CappedSimplexProjectionFunction(torch.autograd.Function):
    """Reference projection with the closed-form backward."""

    @staticmethod
    def forward(ctx, y: torch.Tensor, C: float) -> torch.Tensor:
        x = projection_forward_reference(y, C)
        ctx.C = C
        ctx.save_for_backward(x)
        return x

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (x,) = ctx.saved_tensors
        return capped_simplex_projection_backward_reference(x, g, ctx.C), None


def capped_simplex_projection_reference(y: torch.Tensor, C: float) -> torch.Tensor:
    """Plain-PyTorch projection of the rows of ``y: (..., M)`` onto the capped simplex (differentiable)."""
    C = _as_float_C(C, "capped_simplex_projection")
    _check_y(y, C, True, "capped_simplex_projection")
    return CappedSimplexProjectionFunction.apply(y, C)


# ----------------------------------------------------------------------------- reference A2D solver
def default_a2d_tol(dtype: torch.dtype) -> float:
    """KKT tolerance used when ``tol=None``: 1e-5 in float32 (and half inputs), 1e-9 in float64."""
    return 1e-9 if dtype == torch.float64 else 1e-5


def normalise_gram(G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale-free form ``(A, b)`` of the QP: on ``sum a = 1`` the gradient ``G a`` equals ``A a + b`` up to
    a multiple of the all-ones vector (which the projection ignores), times ``1/L``.

    With ``P = I - 11^T/M``: ``A = P G P / L`` and ``b = P G 1 / (M L)``, where ``L`` is an upper bound
    of the curvature on the simplex's tangent space (``min(trace, max abs row sum)`` of ``P G P``).
    Centering first keeps teachers that share a large common gradient from wasting the step size
    on the irrelevant all-ones direction. ``G`` is symmetrised and divided by its largest diagonal
    entry first; when ``L`` is at rounding level (teachers indistinguishable) ``A = b = 0``, so any
    feasible ``a`` is optimal and the solvers return the uniform weights.
    """
    M = G.shape[-1]
    G = 0.5 * (G + G.mT)
    d = torch.diagonal(G, dim1=-2, dim2=-1).amax(-1)
    d = torch.where(d > 0, d, 1)
    G = G / d[:, None, None]
    r = G.mean(-1)  # row means
    s = r.mean(-1)
    Gc = G - r[:, :, None] - r[:, None, :] + s[:, None, None]
    b = r - s[:, None]
    L = torch.minimum(torch.diagonal(Gc, dim1=-2, dim2=-1).sum(-1), Gc.abs().sum(-1).amax(-1))
    ok = L > 16 * M * torch.finfo(G.dtype).eps
    L = torch.where(ok, L, 1)
    keep = ok.to(G.dtype)
    return Gc * (keep / L)[:, None, None], b * (keep / L)[:, None]


def _grad(A: torch.Tensor, b: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    return (A @ a[..., None])[..., 0] + b


def _kkt_residual(A: torch.Tensor, b: torch.Tensor, a: torch.Tensor, C: float) -> torch.Tensor:
    z = _project_rows(a - _grad(A, b, a), C)
    return (z - a).abs().amax(-1)


def _a2d_m2(G: torch.Tensor, C: float) -> torch.Tensor:
    """Closed form for M = 2: ``a1 = clip((G22 - G12) / (G11 - 2 G12 + G22), 1 - C, C)``, 1/2 if ``g1 = g2``."""
    G = 0.5 * (G + G.mT)
    g11, g12, g22 = G[:, 0, 0], G[:, 0, 1], G[:, 1, 1]
    den = g11 - 2 * g12 + g22
    ok = den > 32 * torch.finfo(G.dtype).eps * torch.maximum(g11, g22)
    a1 = torch.where(ok, (g22 - g12) / torch.where(ok, den, 1), 0.5)
    a1 = a1.clamp(max(1 - C, 0.0), min(C, 1.0))
    return torch.stack([a1, 1 - a1], dim=-1)


def _a2d_solve_reference(G: torch.Tensor, C: float, max_iter: int, tol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference solver on a validated ``(B, M, M)`` float32/float64 batch."""
    B, M, _ = G.shape
    if B == 0:
        return G.new_empty(0, M), G.new_empty(0)
    if M == 1:
        return G.new_ones(B, 1), G.new_zeros(B)
    A, b = normalise_gram(G)
    if M == 2:
        a = _a2d_m2(G, C)
        return a, _kkt_residual(A, b, a, C)
    x = G.new_full((B, M), 1.0 / M)
    y = x.clone()
    t = G.new_ones(B)
    active = torch.ones(B, dtype=torch.bool, device=G.device)
    r = _kkt_residual(A, b, x, C)
    for _ in range(max_iter):
        active = active & (r > tol)
        if not bool(active.any()):
            break
        xn = _project_rows(y - _grad(A, b, y), C)
        tn = 0.5 * (1 + torch.sqrt(1 + 4 * t * t))
        restart = ((y - xn) * (xn - x)).sum(-1) > 0
        yn = torch.where(restart[:, None], xn, xn + ((t - 1) / tn)[:, None] * (xn - x))
        tn = torch.where(restart, 1, tn)
        act = active[:, None]
        x, y, t = torch.where(act, xn, x), torch.where(act, yn, y), torch.where(active, tn, t)
        r = torch.where(active, _kkt_residual(A, b, x, C), r)
    return x, r


def _check_gram(gram: torch.Tensor, C: float, check: bool, who: str) -> None:
    if not isinstance(gram, torch.Tensor):
        raise TypeError(f"{who}: gram must be a tensor, got {type(gram).__name__}")
    if not gram.is_floating_point():
        raise TypeError(f"{who}: gram must be floating point, got {gram.dtype}")
    if gram.dim() != 3 or gram.shape[-1] != gram.shape[-2]:
        raise ValueError(f"{who}: gram must have shape (B, M, M) or (M, M), got {tuple(gram.shape)}")
    B, M, _ = gram.shape
    if M < 1:
        raise ValueError(f"{who}: gram must have M >= 1 teachers, got shape {tuple(gram.shape)}")
    _check_feasible(C, M, who)
    if not check or B == 0:
        return
    G = gram.double()
    scale = torch.diagonal(G, dim1=-2, dim2=-1).abs().amax(-1).clamp_min(torch.finfo(torch.float64).tiny)
    rtol = 1e-10 if gram.dtype == torch.float64 else 1e-3
    psd_tol = 1e-10 if gram.dtype == torch.float64 else 1e-4
    finite = torch.isfinite(G).flatten(1).all(1)
    Gs = torch.where(finite[:, None, None], G, 0) / scale[:, None, None]
    asym = (Gs - Gs.mT).abs().amax((-2, -1))
    # PSD up to psd_tol * M: Cholesky of the shifted matrix succeeds (cholesky_ex reports, it does not sync)
    eye = torch.eye(M, dtype=G.dtype, device=G.device)
    info = torch.linalg.cholesky_ex(0.5 * (Gs + Gs.mT) + (psd_tol * M) * eye).info
    ok = finite & (asym <= rtol) & (info == 0)

    def diagnose() -> None:  # the precise error, with host reads: only when the device check failed
        if not bool(finite.all()):
            raise ValueError(f"{who}: gram contains NaN or Inf entries")
        if bool((asym > rtol).any()):
            b = int(asym.argmax())
            raise ValueError(
                f"{who}: gram is not symmetric (problem {b}: max |G - G^T| / max diag = {float(asym[b]):.3g} > {rtol:g})"
            )
        lam_min = torch.linalg.eigvalsh(0.5 * (Gs + Gs.mT))[..., 0]
        b = int(lam_min.argmin())
        raise ValueError(
            f"{who}: gram is not positive semi-definite (problem {b}: smallest eigenvalue / max diag = "
            f"{float(lam_min[b]):.3g}); a Gram matrix of gradients must be PSD"
        )

    assert_on_device(ok, f"{who}: gram is not finite, symmetric and positive semi-definite", diagnose)


def a2d_weights_reference(
    gram: torch.Tensor, C: float = 0.6, *, max_iter: int = 1000, tol: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain-PyTorch A2D weights; see :func:`a2d_weights`."""
    return a2d_weights(gram, C, max_iter=max_iter, tol=tol, backend="reference")


# ----------------------------------------------------------------------------- fast backends (glue)
def _ext():
    from ._ext import extension

    return extension()


def _ext_reasons(kind: str) -> list[str]:
    from ._ext import cuda_unavailable_reason, unavailable_reason

    why = unavailable_reason("capped_simplex_project_f32")
    if why:
        return [why]
    if kind == "cuda":
        why = unavailable_reason("capped_simplex_project_cuda_f32") or cuda_unavailable_reason()
        return [why] if why else []
    return []


def _sfx(x: torch.Tensor) -> str:
    return "f64" if x.dtype == torch.float64 else "f32"


def _stream(x: torch.Tensor) -> int:
    return raw_stream(x.device)


def projection_cpu(y: torch.Tensor, C: float) -> torch.Tensor:
    """``y``: contiguous (N, M) CPU float32/float64."""
    x = torch.empty_like(y)
    getattr(_ext(), f"capped_simplex_project_{_sfx(y)}")(y.data_ptr(), x.data_ptr(), y.shape[0], y.shape[1], C)
    return x


def projection_backward_cpu(x: torch.Tensor, g: torch.Tensor, C: float) -> torch.Tensor:
    gy = torch.empty_like(g)
    fn = getattr(_ext(), f"capped_simplex_backward_{_sfx(x)}")
    fn(x.data_ptr(), g.data_ptr(), gy.data_ptr(), x.shape[0], x.shape[1], C)
    return gy


def a2d_cpu(G: torch.Tensor, C: float, max_iter: int, tol: float) -> tuple[torch.Tensor, torch.Tensor]:
    B, M, _ = G.shape
    alpha, res = G.new_empty(B, M), G.new_empty(B)
    getattr(_ext(), f"a2d_solve_{_sfx(G)}")(G.data_ptr(), alpha.data_ptr(), res.data_ptr(), B, M, C, max_iter, tol)
    return alpha, res


def projection_cuda(y: torch.Tensor, C: float) -> torch.Tensor:
    x = torch.empty_like(y)
    with torch.cuda.device(y.device):
        fn = getattr(_ext(), f"capped_simplex_project_cuda_{_sfx(y)}")
        fn(y.data_ptr(), x.data_ptr(), y.shape[0], y.shape[1], C, _stream(y))
    return x


def projection_backward_cuda(x: torch.Tensor, g: torch.Tensor, C: float) -> torch.Tensor:
    gy = torch.empty_like(g)
    with torch.cuda.device(x.device):
        fn = getattr(_ext(), f"capped_simplex_backward_cuda_{_sfx(x)}")
        fn(x.data_ptr(), g.data_ptr(), gy.data_ptr(), x.shape[0], x.shape[1], C, _stream(x))
    return gy


def a2d_cuda(G: torch.Tensor, C: float, max_iter: int, tol: float) -> tuple[torch.Tensor, torch.Tensor]:
    B, M, _ = G.shape
    alpha, res = G.new_empty(B, M), G.new_empty(B)
    with torch.cuda.device(G.device):
        fn = getattr(_ext(), f"a2d_solve_cuda_{_sfx(G)}")
        fn(G.data_ptr(), alpha.data_ptr(), res.data_ptr(), B, M, C, max_iter, tol, _stream(G))
    return alpha, res


def projection_triton(y: torch.Tensor, C: float) -> torch.Tensor:
    from sdkd.kernels.capped_simplex import projection_forward

    return projection_forward(y, C)


def projection_backward_triton(x: torch.Tensor, g: torch.Tensor, C: float) -> torch.Tensor:
    from sdkd.kernels.capped_simplex import projection_backward

    return projection_backward(x, g, C)


def a2d_triton(G: torch.Tensor, C: float, max_iter: int, tol: float) -> tuple[torch.Tensor, torch.Tensor]:
    from sdkd.kernels.capped_simplex import a2d_solve

    return a2d_solve(G, C, max_iter, tol)


def _needs(x: torch.Tensor | None, device_type: str) -> list[str]:
    if x is None:  # availability query without inputs
        return []
    why = []
    if x.device.type != device_type:
        why.append(f"needs a {device_type} tensor, got {x.device.type}")
    if x.dtype not in _SUPPORTED:
        why.append(f"dtype {x.dtype} not supported (float32, float64)")
    if x.dim() >= 1 and x.shape[-1] > MAX_M:
        why.append(f"M = {x.shape[-1]} > {MAX_M}")
    return why


def cpu_reasons(x: torch.Tensor | None) -> list[str]:
    return _needs(x, "cpu") + _ext_reasons("cpu")


def cuda_reasons(x: torch.Tensor | None) -> list[str]:
    why = _needs(x, "cuda") + _ext_reasons("cuda")
    if not why and x is not None:  # a GPU older than every compiled arch: fall back instead of failing at launch
        from ._ext import cuda_device_unavailable_reason

        why = [r for r in [cuda_device_unavailable_reason(x.device)] if r]
    return why


def triton_reasons(x: torch.Tensor | None, requested: str = "auto") -> list[str]:
    why = [] if x is None else _needs(x, x.device.type)
    return why + shared_triton_reasons(x, requested)


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
    y: torch.Tensor, C: float | torch.Tensor, *, backend: str = "auto", check: bool = True
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
    check: bool = True,
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
