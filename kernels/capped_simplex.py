"""Triton kernels for the capped-simplex projection and the A2D weight solver.

Each program owns a ``[ROWS, M_PAD]`` tile (``M_PAD`` = M rounded up to a power of two; padded
columns are ``-inf`` and masked). The projection evaluates ``phi`` at all ``2M`` breakpoints as two
``[ROWS, M_PAD, M_PAD]`` broadcasts (twice: shifted by the row max, then by the entry next to ``tau``),
exactly like the reference in ``sdkd/ops/capped_simplex/projection.py``,
which also documents the A2D iteration (FISTA with gradient restart on the centred,
curvature-normalised Gram matrix; closed form for M = 2). ``C`` and ``tol`` are passed as 1-element
tensors so that float64 runs are not rounded through a float32 scalar argument.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

__all__ = ["a2d_solve", "projection_backward", "projection_forward"]


@triton.jit
def _tile_tau(v, cmask, C, M_PAD: tl.constexpr):
    """Breakpoint ``tau`` of each row of finite ``v: [ROWS, M_PAD]`` (valid columns ``cmask``), and the column
    owning the bracket's upper breakpoint (``v_j`` before ``v_j - C``, the first such ``j``)."""
    ninf = float("-inf")
    pinf = float("inf")
    bp1 = v
    bp2 = v - C
    vi = v[:, None, :]  # coordinate i along axis 2, breakpoint j along axis 1
    phi1 = tl.sum(tl.minimum(tl.maximum(vi - bp1[:, :, None], 0.0), C), axis=2)
    phi2 = tl.sum(tl.minimum(tl.maximum(vi - bp2[:, :, None], 0.0), C), axis=2)
    lo1 = cmask & (phi1 >= 1.0)
    lo2 = cmask & (phi2 >= 1.0)
    t_lo = tl.maximum(tl.max(tl.where(lo1, bp1, ninf), axis=1), tl.max(tl.where(lo2, bp2, ninf), axis=1))
    found = tl.max((lo1 | lo2).to(tl.int32), axis=1) > 0
    bp_min = tl.min(tl.where(cmask, bp2, pinf), axis=1)
    t_lo = tl.where(found, t_lo, bp_min)
    hi1 = cmask & (phi1 <= 1.0)
    hi2 = cmask & (phi2 <= 1.0)
    t_hi1 = tl.min(tl.where(hi1, bp1, pinf), axis=1)
    t_hi2 = tl.min(tl.where(hi2, bp2, pinf), axis=1)
    first = t_hi1 <= t_hi2  # ties: the breakpoints v_j come first
    t_hi = tl.where(first, t_hi1, t_hi2)
    cols = tl.arange(0, M_PAD)[None, :]
    hit = tl.where(first[:, None], hi1 & (bp1 == t_hi[:, None]), hi2 & (bp2 == t_hi[:, None]))
    owner = tl.min(tl.where(hit, cols, M_PAD), axis=1)
    phi_lo = tl.sum(tl.minimum(tl.maximum(v - t_lo[:, None], 0.0), C), axis=1)
    phi_hi = tl.sum(tl.minimum(tl.maximum(v - t_hi[:, None], 0.0), C), axis=1)
    den = phi_lo - phi_hi
    pos = den > 0
    frac = tl.where(pos, (phi_lo - 1.0) / tl.where(pos, den, 1.0), 0.0)
    tau = tl.where(frac > 0, t_lo + frac * (t_hi - t_lo), t_lo)  # frac = 0: t_hi may be far (no 0 * inf)
    return tau, owner


@triton.jit
def _project_tile(y, cmask, C, LOWEST: tl.constexpr, EPS: tl.constexpr, M_PAD: tl.constexpr):
    """Project each row of ``y: [ROWS, M_PAD]`` (valid columns ``cmask``); padded columns come back 0.

    As ``_project_rows`` in sdkd/ops/capped_simplex/projection.py: shift by the row max, bracket ``tau``, shift by the
    entry owning the upper breakpoint, solve again, one Newton step on the free set, repair rows whose sum
    still misses 1 by more than M ulp."""
    y = tl.where(cmask, y, LOWEST)  # padding stays finite: no inf - inf anywhere
    m = tl.max(y, axis=1)
    v = tl.where(cmask, tl.minimum(tl.maximum(y - m[:, None], LOWEST), -LOWEST), LOWEST)
    _, owner = _tile_tau(v, cmask, C, M_PAD)
    cols = tl.arange(0, M_PAD)[None, :]
    ya = tl.sum(tl.where(cols == owner[:, None], y, 0.0), axis=1)
    w = tl.where(cmask, tl.minimum(tl.maximum(y - ya[:, None], LOWEST), -LOWEST), LOWEST)
    tau, _ = _tile_tau(w, cmask, C, M_PAD)
    x = tl.where(cmask, tl.minimum(tl.maximum(w - tau[:, None], 0.0), C), 0.0)
    nfree = tl.sum(tl.where(cmask & (x > 0) & (x < C), 1.0, 0.0), axis=1)
    has = nfree > 0
    tau = tl.where(has, tau + (tl.sum(x, axis=1) - 1.0) / tl.where(has, nfree, 1.0), tau)
    x = tl.where(cmask, tl.minimum(tl.maximum(w - tau[:, None], 0.0), C), 0.0)
    r = 1.0 - tl.sum(x, axis=1)
    need = tl.abs(r) > tl.sum(tl.where(cmask, 1.0, 0.0), axis=1) * EPS
    up = (r > 0)[:, None]
    room = tl.where(cmask, tl.where(up, C - x, x), 0.0)
    before = tl.cumsum(room, axis=1) - room
    amount = tl.minimum(tl.maximum(tl.abs(r)[:, None] - before, 0.0), room)
    fixed = tl.where(up, tl.minimum(x + amount, C), tl.maximum(x - amount, 0.0))
    return tl.where(need[:, None] & cmask, fixed, x)


@triton.jit
def _projection_fwd_kernel(
    x_ptr, y_ptr, c_ptr, n_rows, M, ROWS: tl.constexpr, M_PAD: tl.constexpr, LOWEST: tl.constexpr, EPS: tl.constexpr
):
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, M_PAD)
    rmask = rows < n_rows
    cmask = cols[None, :] < M
    offs = rows[:, None] * M + cols[None, :]
    mask = rmask[:, None] & cmask
    C = tl.load(c_ptr)
    y = tl.load(y_ptr + offs, mask=mask, other=0.0)
    x = _project_tile(y, cmask & (rows[:, None] >= 0), C, LOWEST, EPS, M_PAD)  # rows past the end compute on zeros
    tl.store(x_ptr + offs, x, mask=mask)


@triton.jit
def _projection_bwd_kernel(gy_ptr, x_ptr, g_ptr, c_ptr, n_rows, M, ROWS: tl.constexpr, M_PAD: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, M_PAD)
    mask = (rows[:, None] < n_rows) & (cols[None, :] < M)
    offs = rows[:, None] * M + cols[None, :]
    C = tl.load(c_ptr)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    g = tl.load(g_ptr + offs, mask=mask, other=0.0)
    free = mask & (x > 0) & (x < C)
    gf = tl.where(free, g, 0.0)
    cnt = tl.maximum(tl.sum(free.to(tl.int32), axis=1), 1)
    mean = tl.sum(gf, axis=1) / cnt.to(g.dtype)
    tl.store(gy_ptr + offs, tl.where(free, gf - mean[:, None], 0.0), mask=mask)


@triton.jit
def _pg_step(A, b, a, cmask, C, LOWEST: tl.constexpr, EPS: tl.constexpr, M_PAD: tl.constexpr):
    """``(P(a - (A a + b)), max |.| of the step)`` for a ``[ROWS, M_PAD]`` batch (padding of ``a`` is 0)."""
    grad = tl.sum(A * a[:, None, :], axis=2) + b
    z = _project_tile(a - grad, cmask, C, LOWEST, EPS, M_PAD)
    return z, tl.max(tl.where(cmask, tl.abs(z - a), 0.0), axis=1)


@triton.jit
def _a2d_kernel(
    alpha_ptr,
    res_ptr,
    g_ptr,
    c_ptr,
    tol_ptr,
    B,
    M,
    max_iter,
    ROWS: tl.constexpr,
    M_PAD: tl.constexpr,
    LOWEST: tl.constexpr,
    EPS: tl.constexpr,
    IS_M2: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    probs = pid * ROWS + tl.arange(0, ROWS)
    ci = tl.arange(0, M_PAD)
    pmask = probs < B
    cmask1 = ci < M
    cmask = (probs[:, None] >= 0) & cmask1[None, :]  # problems past the end solve G = 0 harmlessly
    m3 = pmask[:, None, None] & cmask1[None, :, None] & cmask1[None, None, :]
    base = probs[:, None, None] * M * M
    G = tl.load(g_ptr + base + ci[None, :, None] * M + ci[None, None, :], mask=m3, other=0.0)
    Gt = tl.load(g_ptr + base + ci[None, None, :] * M + ci[None, :, None], mask=m3, other=0.0)
    C = tl.load(c_ptr)
    tol = tl.load(tol_ptr)
    Mf = tl.zeros([], G.dtype) + M  # M may arrive as a constexpr (Triton specialises 1)
    eye = (ci[:, None] == ci[None, :])[None, :, :]
    diag = tl.sum(tl.where(eye, G, 0.0), axis=2)  # [ROWS, M_PAD]
    d = tl.max(tl.where(cmask, diag, float("-inf")), axis=1)
    d = tl.where(d > 0, d, 1.0)
    Gs = (0.5 * (G + Gt)) / d[:, None, None]
    r = tl.sum(Gs, axis=2) / Mf
    s = tl.sum(r, axis=1) / Mf
    Gc = tl.where(m3, Gs - r[:, :, None] - r[:, None, :] + s[:, None, None], 0.0)
    b = tl.where(cmask, r - s[:, None], 0.0)
    tr = tl.sum(tl.sum(tl.where(eye, Gc, 0.0), axis=2), axis=1)
    rowmax = tl.max(tl.sum(tl.abs(Gc), axis=2), axis=1)
    L = tl.minimum(tr, rowmax)
    ok = L > 16.0 * Mf * EPS
    scale = tl.where(ok, 1.0 / tl.where(ok, L, 1.0), 0.0)
    A = Gc * scale[:, None, None]
    b = b * scale[:, None]
    if IS_M2:
        g11 = tl.sum(tl.where(ci == 0, diag, 0.0), axis=1)
        g22 = tl.sum(tl.where(ci == 1, diag, 0.0), axis=1)
        off = (ci[:, None] == 0) & (ci[None, :] == 1)
        g12 = 0.5 * (
            tl.sum(tl.sum(tl.where(off[None, :, :], G, 0.0), axis=2), axis=1)
            + tl.sum(tl.sum(tl.where(off[None, :, :], Gt, 0.0), axis=2), axis=1)
        )
        den = g11 - 2.0 * g12 + g22
        okd = den > 32.0 * EPS * tl.maximum(g11, g22)
        a1 = tl.where(okd, (g22 - g12) / tl.where(okd, den, 1.0), 0.5)
        a1 = tl.minimum(tl.maximum(a1, tl.maximum(1.0 - C, 0.0)), tl.minimum(C, 1.0))
        x = tl.where(ci[None, :] == 0, a1[:, None], 1.0 - a1[:, None])
        x = tl.where(cmask, x, 0.0)
        _, res = _pg_step(A, b, x, cmask, C, LOWEST, EPS, M_PAD)
    else:
        x = tl.where(cmask, 1.0 / Mf, 0.0)
        y = x
        t = tl.full([ROWS], 1.0, G.dtype)
        _, res = _pg_step(A, b, x, cmask, C, LOWEST, EPS, M_PAD)
        active = pmask & (res > tol)
        k = 0
        while (k < max_iter) & (tl.sum(active.to(tl.int32), axis=0) > 0):
            xn, _ = _pg_step(A, b, y, cmask, C, LOWEST, EPS, M_PAD)
            tn = 0.5 * (1.0 + tl.sqrt(1.0 + 4.0 * t * t))
            restart = tl.sum((y - xn) * (xn - x), axis=1) > 0
            yn = tl.where(restart[:, None], xn, xn + ((t - 1.0) / tn)[:, None] * (xn - x))
            tn = tl.where(restart, 1.0, tn)
            act = active[:, None]
            x = tl.where(act, xn, x)
            y = tl.where(act, yn, y)
            t = tl.where(active, tn, t)
            _, rn = _pg_step(A, b, x, cmask, C, LOWEST, EPS, M_PAD)
            res = tl.where(active, rn, res)
            active = active & (res > tol)
            k += 1
    tl.store(alpha_ptr + probs[:, None] * M + ci[None, :], x, mask=pmask[:, None] & cmask)
    tl.store(res_ptr + probs, res, mask=pmask)


def _pad(M: int) -> int:
    return max(2, triton.next_power_of_2(M))


def _rows_per_program(M_PAD: int, budget: int) -> int:
    return max(1, min(64, budget // (M_PAD * M_PAD)))


def _scalar(v: float, like: torch.Tensor) -> torch.Tensor:
    """``[v]`` on ``like``'s device and dtype, cached: a host-to-device copy per call would synchronise on CUDA."""
    return _cached_scalar(float(v), like.dtype, like.device)


@functools.lru_cache(maxsize=64)
def _cached_scalar(v: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.tensor([v], dtype=dtype, device=device)


def projection_forward(y: torch.Tensor, C: float) -> torch.Tensor:
    """Project the rows of a contiguous ``(N, M)`` float32/float64 tensor."""
    N, M = y.shape
    x = torch.empty_like(y)
    if N == 0:
        return x
    M_PAD = _pad(M)
    ROWS = triton.next_power_of_2(_rows_per_program(M_PAD, 4096))
    grid = (triton.cdiv(N, ROWS),)
    fi = torch.finfo(y.dtype)
    _projection_fwd_kernel[grid](x, y, _scalar(C, y), N, M, ROWS=ROWS, M_PAD=M_PAD, LOWEST=-fi.max, EPS=fi.eps)
    return x


def projection_backward(x: torch.Tensor, g: torch.Tensor, C: float) -> torch.Tensor:
    """Closed-form VJP for contiguous ``(N, M)`` ``x`` (projection output) and ``g``."""
    N, M = x.shape
    gy = torch.empty_like(g)
    if N == 0:
        return gy
    M_PAD = _pad(M)
    ROWS = triton.next_power_of_2(max(1, min(128, 4096 // M_PAD)))
    grid = (triton.cdiv(N, ROWS),)
    _projection_bwd_kernel[grid](gy, x, g, _scalar(C, x), N, M, ROWS=ROWS, M_PAD=M_PAD)
    return gy


def a2d_solve(G: torch.Tensor, C: float, max_iter: int, tol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A2D weights for a contiguous ``(B, M, M)`` float32/float64 batch: ``(alpha, kkt_residual)``."""
    B, M, _ = G.shape
    alpha, res = G.new_empty(B, M), G.new_empty(B)
    if B == 0:
        return alpha, res
    M_PAD = _pad(M)
    ROWS = triton.next_power_of_2(_rows_per_program(M_PAD, 2048))
    grid = (triton.cdiv(B, ROWS),)
    _a2d_kernel[grid](
        alpha,
        res,
        G,
        _scalar(C, G),
        _scalar(tol, G),
        B,
        M,
        max_iter,
        ROWS=ROWS,
        M_PAD=M_PAD,
        LOWEST=-torch.finfo(G.dtype).max,
        EPS=torch.finfo(G.dtype).eps,
        IS_M2=M == 2,
    )
    return alpha, res
