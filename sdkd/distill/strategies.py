"""Teacher-weighting rules of the multi-teacher strategies (DESIGN.md section 6).

Pure tensor functions, independent of any model: the :class:`~sdkd.distill.Distiller` feeds
them per-teacher losses or gradients and uses the weights they return (always detached).

- ``single``: one teacher, weight 1.
- ``aver``: equal weights ``1/M``.
- ``a2d``: weights on the capped simplex minimising ``1/2 |sum_m alpha_m g_m|^2`` (eq. 13),
  solved by :func:`sdkd.ops.a2d_weights` on the Gram matrix of the gradients.
- ``camkd``: per-sample ``w_m = (1 - softmax_m(e_m)) / (M - 1)``, ``e_m`` the teacher's own error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

STRATEGIES = ("single", "aver", "a2d", "camkd")
GRAD_SPACES = ("output", "params")


def check_strategy(strategy: str, num_teachers: int, C: float, grad_space: str) -> None:
    """Validate a strategy configuration; raises ``ValueError`` naming the bad argument."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if grad_space not in GRAD_SPACES:
        raise ValueError(f"grad_space must be one of {GRAD_SPACES}, got {grad_space!r}")
    if num_teachers < 1:
        raise ValueError("teachers: need at least one teacher (or a cache holding one)")
    if strategy == "single" and num_teachers != 1:
        raise ValueError(
            f"strategy='single' needs exactly one teacher, got {num_teachers}; use 'aver', 'a2d' or 'camkd'"
        )
    if strategy == "a2d" and not (C * num_teachers >= 1.0 - 1e-12):
        raise ValueError(
            f"C: the capped simplex {{sum alpha = 1, 0 <= alpha <= C}} is empty for C={C} and M={num_teachers} "
            f"teachers; need C * M >= 1 (C >= {1.0 / num_teachers:.4g})"
        )


# ----------------------------------------------------------------------------- per-sample losses
_ELEMENTWISE = {nn.MSELoss: F.mse_loss, nn.L1Loss: F.l1_loss, nn.SmoothL1Loss: F.smooth_l1_loss}


def per_sample_loss(loss_fn: Callable[..., torch.Tensor], a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Loss of every sample of the batch, ``(B,)``, such that its mean is ``loss_fn(a, b)`` for
    mean-reduced element-wise losses.

    A loss object with a ``per_sample(a, b)`` method is asked directly (its inputs may differ in
    shape, e.g. an adapted feature loss); element-wise ``nn`` losses with ``reduction="mean"`` are
    vectorised; any other callable is evaluated sample by sample (exact for every loss, slower).
    """
    per_sample = getattr(loss_fn, "per_sample", None)
    if callable(per_sample):  # asked first: adapted feature losses compare tensors of different shapes
        out = per_sample(a, b)
        if out.shape != a.shape[:1]:
            raise ValueError(f"per_sample_loss: {type(loss_fn).__name__}.per_sample returned shape {tuple(out.shape)}")
        return out
    if a.shape != b.shape:
        raise ValueError(f"per_sample_loss: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    for cls, fn in _ELEMENTWISE.items():
        if type(loss_fn) is cls and loss_fn.reduction == "mean":
            kwargs = {"beta": loss_fn.beta} if cls is nn.SmoothL1Loss else {}
            return fn(a, b, reduction="none", **kwargs).flatten(1).mean(1)
    if loss_fn in (F.mse_loss, F.l1_loss):
        return loss_fn(a, b, reduction="none").flatten(1).mean(1)
    return torch.stack([loss_fn(a[i : i + 1], b[i : i + 1]).reshape(()) for i in range(a.shape[0])])


# ----------------------------------------------------------------------------- weights
def camkd_weights(errors: torch.Tensor) -> torch.Tensor:
    """CA-MKD confidence weights from the teachers' per-sample errors ``(M, B)`` -> ``(M, B)``.

    ``w_m = (1 - softmax_m(e_m)) / (M - 1)``: the teacher with the smaller error on a sample
    gets the larger weight; weights sum to 1 over teachers. ``M = 1`` gives weight 1.
    """
    if errors.dim() != 2:
        raise ValueError(f"camkd_weights: errors must be (M, B), got shape {tuple(errors.shape)}")
    M = errors.shape[0]
    if M == 1:
        return torch.ones_like(errors)
    return (1.0 - torch.softmax(errors, dim=0)) / (M - 1)


def gram(vectors: torch.Tensor) -> torch.Tensor:
    """Gram matrices of per-teacher vectors: ``(..., M, D)`` -> ``(..., M, M)``, accumulated in fp64.

    Teacher gradients share the task-loss component, so G is dominated by a common part and
    the QP depends on small differences; fp32 accumulation visibly moves alpha (~1e-4).
    """
    v = vectors.detach().to(torch.float64)
    return v @ v.transpose(-1, -2)


def a2d_solve(G: torch.Tensor, C: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A2D weights for Gram matrices ``(B, M, M)``: ``alpha (B, M)`` and the KKT residual ``(B,)``.

    The weights are computed without autograd (alpha is a constant in the backward pass). ``G`` is a
    Gram matrix (PSD by construction), so the op's input checks are skipped: no per-step work or host
    read for them; a non-finite ``G`` gives non-finite weights, which the Distiller asserts against.
    """
    from sdkd.ops import a2d_weights

    if G.dim() != 3 or G.shape[-1] != G.shape[-2]:
        raise ValueError(f"a2d_solve: Gram matrices must be (B, M, M), got shape {tuple(G.shape)}")
    with torch.no_grad():
        alpha, residual = a2d_weights(G.detach(), C, check=False)  # scale-free: the op normalises G itself
    return alpha, residual


def a2d_output_weights(grads: Sequence[torch.Tensor], C: float, per_sample: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A2D weights from per-teacher gradients w.r.t. the student prediction, each ``(B, ...)``.

    ``per_sample=False``: each gradient is averaged over the batch (as the AEKD code does) and
    one QP is solved -> ``alpha (1, M)``; ``per_sample=True``: one QP per sample -> ``(B, M)``.
    """
    g = torch.stack([x.detach().flatten(1) for x in grads])  # (M, B, D)
    v = g.mean(1, keepdim=True) if not per_sample else g  # (M, 1 or B, D)
    return a2d_solve(gram(v.transpose(0, 1)), C)
