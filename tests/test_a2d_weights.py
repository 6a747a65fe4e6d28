"""A2D weight QP: optimality against an exhaustive active-set oracle, KKT residual, edges, every backend."""

import itertools

import numpy as np
import pytest
import torch
from _op_backends import backend_params

from sdkd.ops import a2d_weights
from sdkd.ops.capped_simplex import a2d_weights_op, a2d_weights_reference, default_a2d_tol

BACKENDS = backend_params()


def _skip_unusable(name, device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    reasons = a2d_weights_op.get(name).not_supported_reasons(gram=torch.zeros(1, 2, 2, device=device), requested=name)
    if reasons:
        pytest.skip(f"backend {name} unusable here: {reasons}")


def oracle(G: np.ndarray, C: float) -> tuple[np.ndarray, float]:
    """Exhaustive active-set enumeration: every coordinate at 0, at C, or free; the free block solves
    the equality-constrained KKT system (least squares, so singular G works); the best feasible
    candidate is the global minimum of the convex QP. Exact for small M (3^M systems)."""
    M = G.shape[0]
    best, best_a = np.inf, None
    for assign in itertools.product((0, 1, 2), repeat=M):  # 0: lower, 1: upper, 2: free
        a = np.zeros(M)
        up = [i for i in range(M) if assign[i] == 1]
        fr = [i for i in range(M) if assign[i] == 2]
        a[up] = C
        rest = 1 - C * len(up)
        if not fr:
            if abs(rest) > 1e-12:
                continue
        else:
            K = np.zeros((len(fr) + 1, len(fr) + 1))
            K[:-1, :-1] = G[np.ix_(fr, fr)]
            K[:-1, -1] = 1
            K[-1, :-1] = 1
            rhs = np.concatenate([-G[np.ix_(fr, up)].sum(1) * C, [rest]])
            sol = np.linalg.lstsq(K, rhs, rcond=None)[0]
            a[fr] = sol[:-1]
            if abs(a.sum() - 1) > 1e-9 or (a < -1e-12).any() or (a > C + 1e-12).any():
                continue
        f = 0.5 * a @ G @ a
        if f < best - 1e-15:
            best, best_a = f, a
    return best_a, best


def random_gram(B, M, kind="rand", dtype=torch.float64, gen=None):
    if kind == "rand":
        V = torch.randn(B, M, 3 * M, dtype=torch.float64, generator=gen)
    elif kind == "collinear":  # teachers share a large common gradient
        common = torch.randn(B, 1, 3 * M, dtype=torch.float64, generator=gen)
        V = common + 0.05 * torch.randn(B, M, 3 * M, dtype=torch.float64, generator=gen)
    elif kind == "rankdef":
        V = torch.randn(B, M, max(1, M // 2), dtype=torch.float64, generator=gen)
    else:
        raise ValueError(kind)
    return (V @ V.mT).to(dtype)


def objective(G, a):
    G, a = G.double(), a.double()
    return 0.5 * torch.einsum("bi,bij,bj->b", a, G, a)


def check_feasible(a, C, atol):
    a = a.double()
    assert torch.isfinite(a).all()
    assert torch.allclose(a.sum(-1), torch.ones(a.shape[0], dtype=torch.float64), atol=atol)
    assert (a >= -atol).all() and (a <= C + atol).all()


# ----------------------------------------------------------------------------- reference vs oracle
@pytest.mark.parametrize("M", [2, 3, 4, 5])
@pytest.mark.parametrize("kind", ["rand", "collinear", "rankdef"])
def test_reference_matches_exhaustive_oracle(M, kind):
    B = 6
    G = random_gram(B, M, kind)
    for C in sorted({1.0 / M, 0.4, 0.6, 1.0}):
        if C * M < 1 - 1e-12:
            continue
        a, r = a2d_weights(G, C, backend="reference", max_iter=3000)
        check_feasible(a, C, 1e-12)
        assert (r <= default_a2d_tol(torch.float64)).all()
        f = objective(G, a)
        for b in range(B):
            a_star, f_star = oracle(G[b].numpy(), C)
            scale = float(G[b].diagonal().max())
            assert f[b] - f_star <= 1e-7 * scale, (b, C, float(f[b]), f_star)
            if kind == "rand":  # strictly convex: the minimiser is unique
                np.testing.assert_allclose(a[b].numpy(), a_star, atol=1e-6)


def test_m2_closed_form_and_m1():
    G = random_gram(20, 2)
    a, r = a2d_weights(G, 0.6, backend="reference")
    for b in range(20):
        np.testing.assert_allclose(a[b].numpy(), oracle(G[b].numpy(), 0.6)[0], atol=1e-12)
    assert (r < 1e-12).all()
    a1, r1 = a2d_weights(torch.rand(3, 1, 1), 1.0)
    assert torch.equal(a1, torch.ones(3, 1)) and torch.equal(r1, torch.zeros(3))
    same = torch.ones(1, 2, 2)  # g1 = g2: 1/2 each
    assert torch.allclose(a2d_weights(same, 0.6)[0], torch.tensor([[0.5, 0.5]]))


def test_special_C_and_degenerate_teachers():
    G = random_gram(4, 5)
    a, _ = a2d_weights(G, 0.2)  # C*M = 1: forced uniform
    assert torch.allclose(a, torch.full_like(a, 0.2), atol=1e-12)
    a, _ = a2d_weights(G, 1.0)  # C = 1: MGDA min-norm point
    for b in range(4):
        np.testing.assert_allclose(a[b].numpy(), oracle(G[b].numpy(), 1.0)[0], atol=1e-6)
    g = torch.randn(1, 1, 9, dtype=torch.float64).expand(2, 4, 9)  # identical teachers: any weights optimal
    a, r = a2d_weights(g @ g.mT, 0.6)
    assert torch.allclose(a, torch.full_like(a, 0.25)) and (r < 1e-15).all()
    a, r = a2d_weights(torch.zeros(2, 3, 3, dtype=torch.float64), 0.6)  # zero gradients
    assert torch.allclose(a, torch.full_like(a, 1 / 3)) and (r < 1e-15).all()


def test_scale_invariance_and_2d_input():
    G = random_gram(5, 4)
    a, _ = a2d_weights(G, 0.6)
    for s in (1e-20, 1e-6, 1e8, 1e40):
        torch.testing.assert_close(a2d_weights(G * s, 0.6)[0], a, atol=1e-9, rtol=0)
    a0, r0 = a2d_weights(G[0], 0.6)
    assert a0.shape == (4,) and r0.shape == ()
    torch.testing.assert_close(a0, a[0])


def test_empty_batch_and_max_iter_zero():
    a, r = a2d_weights(torch.zeros(0, 3, 3), 0.6)
    assert a.shape == (0, 3) and r.shape == (0,)
    G = random_gram(3, 4)
    a, r = a2d_weights(G, 0.6, max_iter=0)
    assert torch.allclose(a, torch.full_like(a, 0.25))  # the start point, with its honest residual
    assert (r > 0).all()


# ----------------------------------------------------------------------------- every backend
@pytest.mark.parametrize("name,device", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("M", [1, 2, 3, 4, 8])
def test_backend_parity(name, device, dtype, M):
    _skip_unusable(name, device)
    interp = name == "triton" and device == "cpu"
    B = 5 if interp else 64
    max_iter = 25 if interp else 1000
    gen = torch.Generator().manual_seed(M)
    for kind in ("rand", "collinear") if not interp else ("rand",):
        G = random_gram(B, M, kind, dtype, gen)
        C = max(0.6, 1.0 / M)
        a, r = a2d_weights(G.to(device), C, backend=name, max_iter=max_iter)
        a, r = a.cpu(), r.cpu()
        ar, rr = a2d_weights_reference(G, C, max_iter=max_iter)
        assert a.dtype == dtype and r.dtype == dtype
        atol = 1e-4 if dtype == torch.float32 else 1e-9
        torch.testing.assert_close(a, ar, atol=atol, rtol=0)
        check_feasible(a, C, 10 * atol)
        if not interp:
            assert (r <= default_a2d_tol(dtype)).all(), (kind, r.max())
            f_ref = objective(G, ar.double())
            assert (objective(G, a) - f_ref <= 1e-5 * G.double().diagonal(dim1=1, dim2=2).amax(-1)).all()


@pytest.mark.parametrize("name,device", BACKENDS)
def test_backend_matches_oracle_small(name, device):
    _skip_unusable(name, device)
    max_iter = 40 if name == "triton" and device == "cpu" else 2000
    G = random_gram(4, 3)
    a, r = a2d_weights(G.to(device), 0.5, backend=name, max_iter=max_iter, tol=1e-10)
    a = a.cpu()
    for b in range(4):
        a_star, f_star = oracle(G[b].numpy(), 0.5)
        assert float(objective(G[b : b + 1], a[b : b + 1])) - f_star <= 1e-6 * float(G[b].diagonal().max())


@pytest.mark.parametrize("name,device", BACKENDS)
def test_backend_edges(name, device):
    _skip_unusable(name, device)
    a, r = a2d_weights(torch.zeros(0, 4, 4, device=device), 0.6, backend=name)
    assert a.shape == (0, 4)
    G = random_gram(3, 4).to(device)
    a, _ = a2d_weights(G, 0.25, backend=name, max_iter=10)
    assert torch.allclose(a.cpu(), torch.full((3, 4), 0.25, dtype=torch.float64))
    a, _ = a2d_weights(torch.zeros(2, 3, 3, dtype=torch.float64, device=device), 0.6, backend=name)
    assert torch.allclose(a.cpu(), torch.full((2, 3), 1 / 3, dtype=torch.float64))


# ----------------------------------------------------------------------------- errors
def test_bad_gram_errors():
    G = random_gram(2, 3)
    with pytest.raises(ValueError, match="infeasible"):
        a2d_weights(G, 0.3)
    with pytest.raises(ValueError, match="C must be"):
        a2d_weights(G, 0.0)
    with pytest.raises(ValueError, match="C must be"):
        a2d_weights(G, -0.5)
    bad = G.clone()
    bad[1, 0, 2] += 1.0
    with pytest.raises(ValueError, match="not symmetric.*problem 1"):
        a2d_weights(bad, 0.6)
    neg = G.clone()
    neg[0] = -torch.eye(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="not positive semi-definite.*problem 0"):
        a2d_weights(neg, 0.6)
    indef = torch.tensor([[[1.0, 2.0], [2.0, 1.0]]])
    with pytest.raises(ValueError, match="not positive semi-definite"):
        a2d_weights(indef, 0.6)
    nan = G.clone()
    nan[0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        a2d_weights(nan, 0.6)
    with pytest.raises(ValueError, match="shape"):
        a2d_weights(torch.zeros(2, 3, 4), 0.6)
    with pytest.raises(ValueError, match="max_iter"):
        a2d_weights(G, 0.6, max_iter=-1)
    with pytest.raises(ValueError, match="tol"):
        a2d_weights(G, 0.6, tol=float("nan"))


def test_tiny_rounding_asymmetry_is_accepted_and_grad_ignored():
    V = torch.randn(4, 3, 50)
    G = V @ V.mT
    G = G + 1e-6 * G.abs().amax() * torch.randn_like(G)  # float32 matmul-level asymmetry
    G = G + 1e-3 * torch.eye(3)  # keep it PSD after the noise
    Gr = G.clone().requires_grad_()
    a, r = a2d_weights(Gr, 0.6)
    assert not a.requires_grad and torch.isfinite(a).all()


def test_opcheck_custom_op():
    G = random_gram(3, 3)
    torch.library.opcheck(torch.ops.sdkd.a2d_weights.default, (G, 0.6, 100, 1e-9, "reference"))
