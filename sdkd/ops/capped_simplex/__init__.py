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

The plain-PyTorch functions are the definition of correctness; ``cpu`` (C++, OpenMP), ``cuda`` and
``triton`` backends register in ``capped_simplex_op`` / ``a2d_weights_op``. Modules: ``projection`` (input checks,
the reference projection and its autograd), ``a2d`` (the reference A2D solver and its checks), ``native`` (the
fast backends' glue and refusal reasons), ``op`` (dispatch, custom ops, the public functions).
"""

from .a2d import _a2d_solve_reference, default_a2d_tol
from .op import a2d_weights, a2d_weights_op, a2d_weights_reference, capped_simplex_op, capped_simplex_projection
from .projection import (
    capped_simplex_projection_backward_reference,
    capped_simplex_projection_reference,
    projection_forward_reference,
)

__all__ = [
    "_a2d_solve_reference",
    "a2d_weights",
    "a2d_weights_op",
    "a2d_weights_reference",
    "capped_simplex_op",
    "capped_simplex_projection",
    "capped_simplex_projection_backward_reference",
    "capped_simplex_projection_reference",
    "default_a2d_tol",
    "projection_forward_reference",
]
