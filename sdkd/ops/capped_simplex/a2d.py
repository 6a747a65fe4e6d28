"""The A2D weight QP's plain-PyTorch reference solver and its input checks (the definition of correctness for
every backend's iteration). See the package docstring for the method."""

from __future__ import annotations

import torch

from .._device_checks import assert_on_device
from .projection import _check_feasible, _project_rows


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
