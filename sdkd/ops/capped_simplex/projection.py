"""The capped-simplex projection: input checks and the plain-PyTorch reference (the definition of correctness,
forward and closed-form backward). See the package docstring for the method."""

from __future__ import annotations

import math

import torch

from .._device_checks import assert_on_device

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
