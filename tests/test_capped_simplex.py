"""Capped-simplex projection: invariants, an independent oracle, adversarial rows, backward, every backend."""

import math
import warnings

import numpy as np
import pytest
import torch
from _op_backends import backend_params

from sdkd.ops import BackendUnavailableError, capped_simplex_projection
from sdkd.ops.capped_simplex import (
    capped_simplex_op,
    capped_simplex_projection_backward_reference,
    capped_simplex_projection_reference,
    projection_forward_reference,
)

TOL = {torch.float32: 2e-6, torch.float64: 1e-12}


def _usable(name: str, device: str = "cpu") -> bool:
    y = torch.zeros(1, 2, device=device) if device == "cpu" or torch.cuda.is_available() else None
    if y is None:
        return False
    return not capped_simplex_op.get(name).not_supported_reasons(y=y, requested=name)


BACKENDS = backend_params()


def _skip_unusable(name, device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    if not _usable(name, device):
        reasons = capped_simplex_op.get(name).not_supported_reasons(y=torch.zeros(1, 2, device=device), requested=name)
        pytest.skip(f"backend {name} unusable here: {reasons}")


def oracle(y: np.ndarray, C: float) -> np.ndarray:
    """Independent: 200-step bisection on tau in float64 (numpy), per row."""
    y = np.asarray(y, dtype=np.float64).reshape(-1, y.shape[-1])
    lo = y.min(1) - C
    hi = y.max(1)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        phi = np.clip(y - mid[:, None], 0, C).sum(1)
        lo = np.where(phi >= 1, mid, lo)
        hi = np.where(phi >= 1, hi, mid)
    return np.clip(y - 0.5 * (lo + hi)[:, None], 0, C)


def sparsemax(y: np.ndarray) -> np.ndarray:
    """Projection onto the plain simplex by sorting (Martins & Astudillo), the C >= 1 case."""
    z = -np.sort(-y, axis=-1)
    k = np.arange(1, y.shape[-1] + 1)
    cs = np.cumsum(z, -1)
    supp = (1 + k * z) > cs
    kz = supp.sum(-1, keepdims=True)
    tau = (np.take_along_axis(cs, kz - 1, -1) - 1) / kz
    return np.maximum(y - tau, 0)


def assert_feasible(x: torch.Tensor, C: float, what: str = "") -> None:
    """sum x = 1 within M ulp of the dtype (whatever |y| is) and 0 <= x <= C exactly (C as the kernels see it)."""
    M = x.shape[-1]
    C = float(torch.tensor(C, dtype=x.dtype))
    x64 = x.double().reshape(-1, M)
    assert torch.isfinite(x64).all(), what
    err = (x64.sum(-1) - 1).abs().max().item() / torch.finfo(x.dtype).eps
    assert err <= M + 1, f"{what}: |sum x - 1| = {err:.3g} ulp"
    assert (x64 >= 0).all() and (x64 <= C).all(), what


def check_invariants(x: torch.Tensor, y: torch.Tensor, C: float, atol: float) -> None:
    M = y.shape[-1]
    C = float(torch.tensor(C, dtype=x.dtype))  # the bound as the kernels see it
    x64, y64 = x.double().reshape(-1, M), y.double().reshape(-1, M)
    assert torch.isfinite(x64).all()
    scale = 1 + y64.abs().amax(-1)  # x = y - tau carries the rounding of y's magnitude
    assert_feasible(x, C)
    free = (x64 > 0) & (x64 < C)
    d = torch.where(free, y64 - x64, torch.nan)  # y - x is the same tau on every free coordinate
    spread = torch.nan_to_num(d, nan=-math.inf).amax(-1) - torch.nan_to_num(d, nan=math.inf).amin(-1)
    spread = torch.where(free.sum(-1) >= 2, spread, torch.zeros_like(spread))
    assert (spread <= 10 * atol * scale).all()


def run(name, y, C):
    return capped_simplex_projection(y, C, backend=name)


# ----------------------------------------------------------------------------- reference vs oracle
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("M", [1, 2, 3, 5, 8, 16, 17, 64])
def test_reference_matches_bisection_oracle(dtype, M):
    y = torch.randn(200, M, dtype=torch.float64) * torch.logspace(-2, 2, 200, dtype=torch.float64)[:, None]
    for C in sorted({1.0 / M, 1.0 / M + 1e-3, 0.3, 0.6, 1.0, 2.0}):
        if C * M < 1 - 1e-12:
            continue
        x = capped_simplex_projection_reference(y.to(dtype), C)
        ref = oracle(y.numpy(), C)
        atol = TOL[dtype] * (1 + float(y.abs().max()) if dtype == torch.float32 else 1e3)
        np.testing.assert_allclose(x.double().numpy(), ref, atol=atol, rtol=0)
        check_invariants(x, y.to(dtype), C, TOL[dtype])


def test_plain_simplex_is_sparsemax():
    y = torch.randn(100, 7, dtype=torch.float64) * 3
    np.testing.assert_allclose(capped_simplex_projection(y, 1.0).numpy(), sparsemax(y.numpy()), atol=1e-12)
    np.testing.assert_allclose(capped_simplex_projection(y, 5.0).numpy(), sparsemax(y.numpy()), atol=1e-12)


def test_scaling_identity():
    """P_C(y) = C * P_k(y / C) onto {sum z = k, 0 <= z <= 1}, k = 1/C: checked through sum scaling."""
    y = torch.randn(50, 6, dtype=torch.float64)
    C = 0.3
    x = capped_simplex_projection(y, C)
    z = oracle((y / C).numpy() * C, C)  # same problem expressed in scaled units
    np.testing.assert_allclose(x.numpy(), z, atol=1e-12)


# ----------------------------------------------------------------------------- every backend
@pytest.mark.parametrize("name,device", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("M", [1, 2, 3, 8, 13, 16, 33, 64])
def test_backend_parity_random(name, device, dtype, M):
    _skip_unusable(name, device)
    n = 37 if name == "triton" else 301
    y = (torch.randn(n, M, dtype=torch.float64) * 4).to(dtype)
    Cs = sorted({1.0 / M, 0.25, 0.6, 1.0}) if name != "triton" else [max(0.25, 1.0 / M)]  # interpreter is slow
    for C in Cs:
        if C * M < 1 - 1e-12:
            continue
        x = run(name, y.to(device), C).cpu()
        assert x.dtype == dtype and x.shape == y.shape
        ref = projection_forward_reference(y, C)
        torch.testing.assert_close(x, ref, atol=TOL[dtype] * 4, rtol=0)
        check_invariants(x, y, C, TOL[dtype])
        np.testing.assert_allclose(x.double().numpy(), oracle(y.double().numpy(), C), atol=TOL[dtype] * 40, rtol=0)


def _adversarial(dtype):
    """(name, y, C) rows that stress ties, scales and the C*M = 1 / C = 1 edges."""
    big = 1e6 if dtype == torch.float32 else 1e12
    cases = [
        ("ties", torch.full((3, 4), 0.5), 0.4),
        ("ties_sparse", torch.tensor([[1.0, 1.0, 1.0, -5.0], [2.0, 2.0, 0.0, 0.0]]), 0.6),
        ("C_times_M_is_1", torch.randn(5, 5), 0.2),
        ("C_is_1", torch.randn(5, 6) * 10, 1.0),
        ("huge_spread", torch.randn(6, 5) * big, 0.6),
        ("huge_offset", 1e4 + torch.randn(6, 5), 0.3),
        ("tiny", torch.randn(6, 5) * 1e-30, 0.3),
        ("zeros", torch.zeros(2, 7), 0.2),
        ("one_dominant", torch.tensor([[10.0, 0.0, 0.0, 0.0]]), 0.5),
        ("M_is_1", torch.randn(4, 1), 1.0),
        ("M_is_1_bigC", torch.randn(4, 1), 3.0),
        ("exact_breakpoints", torch.tensor([[0.6, 0.0, -0.6, 0.0]]), 0.6),
    ]
    return [(n, y.to(dtype), C) for n, y, C in cases]


@pytest.mark.parametrize("name,device", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_backend_adversarial(name, device, dtype):
    _skip_unusable(name, device)
    for case, y, C in _adversarial(dtype):
        x = run(name, y.to(device), C).cpu()
        ref = projection_forward_reference(y, C)
        scale = 1 + float(y.abs().max()) * (TOL[dtype] if case.startswith("huge") else 0)
        torch.testing.assert_close(x, ref, atol=TOL[dtype] * 4 * scale, rtol=0, msg=case)
        assert_feasible(x, C, case)
        if case in ("ties", "zeros", "C_times_M_is_1"):  # equal (or forced) weights
            assert torch.allclose(x, torch.full_like(x, 1.0 / y.shape[-1]), atol=TOL[dtype]), case
        if case == "one_dominant":
            torch.testing.assert_close(x, torch.tensor([[0.5, 1 / 6, 1 / 6, 1 / 6]], dtype=dtype))


def _spread_rows(dtype, n: int):
    """(name, y, C, well_conditioned): rows whose entries span many orders of magnitude (issue 17 item 5)."""
    g = torch.Generator().manual_seed(5)
    top = 30.0 if dtype == torch.float32 else 250.0
    huge = torch.finfo(dtype).max / 2
    return [
        ("issue_example", torch.tensor([[1e8, 1.0, 0.0]], dtype=torch.float64), 0.6, True),
        ("randn_1e7", torch.randn(n, 4, generator=g, dtype=torch.float64) * 1e7, 0.6, True),
        ("randn_1e7_M13", torch.randn(n, 13, generator=g, dtype=torch.float64) * 1e7, 0.2, True),
        (
            "nested_scales",
            torch.randn(n, 7, generator=g, dtype=torch.float64) * torch.logspace(-3, top, 7, dtype=torch.float64),
            0.6,
            False,
        ),
        (
            "near_overflow",
            torch.tensor([[huge, -huge, 0.0, 1.0], [huge, huge, -huge, 5.0]], dtype=torch.float64),
            0.4,
            False,
        ),
    ]


@pytest.mark.parametrize("name,device", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_backend_feasible_for_any_spread(name, device, dtype):
    """Feasible (sum within M ulp, bounds exact) however far apart the entries are; optimal (float64 oracle)
    where the answer is well-conditioned in the dtype."""
    _skip_unusable(name, device)
    for case, y64, C, well_conditioned in _spread_rows(dtype, 64 if name == "triton" else 1000):
        y = y64.to(dtype)
        x = run(name, y.to(device), C).cpu()
        assert_feasible(x, C, case)
        if well_conditioned:  # the float64 bisection oracle itself is only good to a few ulp of |y| in float64
            atol = TOL[dtype] * 8 + 4 * torch.finfo(torch.float64).eps * float(y64.abs().max())
            np.testing.assert_allclose(x.double().numpy(), oracle(y.double().numpy(), C), atol=atol, rtol=0)
    x = run(name, torch.tensor([[1e8, 1.0, 0.0]], dtype=dtype, device=device), 0.6).cpu()
    torch.testing.assert_close(x, torch.tensor([[0.6, 0.4, 0.0]], dtype=dtype), atol=TOL[dtype], rtol=0)


@pytest.mark.parametrize("name,device", BACKENDS)
def test_backend_idempotent_and_shapes(name, device):
    _skip_unusable(name, device)
    y = torch.randn(2, 3, 5, 6, dtype=torch.float64, device=device)
    x = run(name, y, 0.3)
    assert x.shape == y.shape
    torch.testing.assert_close(run(name, x, 0.3), x, atol=1e-12, rtol=0)
    empty = torch.empty(0, 6, dtype=torch.float32, device=device)
    assert run(name, empty, 0.5).shape == (0, 6)
    nc = torch.randn(6, 9, dtype=torch.float64, device=device).t()  # non-contiguous
    torch.testing.assert_close(run(name, nc, 0.2), projection_forward_reference(nc.contiguous(), 0.2))


# ----------------------------------------------------------------------------- backward
def test_reference_gradcheck():
    y = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: capped_simplex_projection_reference(t, 0.35), (y,))


@pytest.mark.parametrize("name,device", BACKENDS)
def test_backend_gradcheck(name, device):
    _skip_unusable(name, device)
    y = (torch.randn(5, 6, dtype=torch.float64) * 2).to(device).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: capped_simplex_projection(t, 0.3, backend=name), (y,))


@pytest.mark.parametrize("name,device", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_backend_backward_parity(name, device, dtype):
    _skip_unusable(name, device)
    y = (torch.randn(41, 7, dtype=torch.float64) * 3).to(dtype)
    g = torch.randn_like(y)
    x = projection_forward_reference(y, 0.25)
    want = capped_simplex_projection_backward_reference(x, g, 0.25)
    yd = y.to(device).requires_grad_()
    out = capped_simplex_projection(yd, 0.25, backend=name)
    (out * g.to(device)).sum().backward()
    torch.testing.assert_close(yd.grad.cpu(), want, atol=TOL[dtype] * 4, rtol=0)
    # properties of the closed form: zero on clamped coordinates, sums to zero
    free = (x > 0) & (x < 0.25)
    assert (yd.grad.cpu()[~free] == 0).all()
    assert torch.allclose(yd.grad.double().sum(-1).cpu(), torch.zeros(41, dtype=torch.float64), atol=1e-5)


def test_closed_form_equals_autograd_of_tau():
    """Independent check of the closed form: autograd through x = clip(y - tau(y), 0, C) with tau from
    the free set, tau = (sum_F y - (1 - C |U|)) / |F|, differentiated by autograd."""
    y = torch.randn(30, 6, dtype=torch.float64) * 2
    C = 0.3
    x = projection_forward_reference(y, C)
    free, upper = (x > 0) & (x < C), x >= C
    yv = y.clone().requires_grad_()
    nf = free.sum(-1, keepdim=True).clamp_min(1)
    tau = ((yv * free).sum(-1, keepdim=True) - (1 - C * upper.sum(-1, keepdim=True))) / nf
    xa = torch.where(free, yv - tau, x)
    g = torch.randn_like(y)
    (xa * g).sum().backward()
    torch.testing.assert_close(capped_simplex_projection_backward_reference(x, g, C), yv.grad)
    torch.testing.assert_close(xa.detach(), x)


# ----------------------------------------------------------------------------- errors and dispatch
@pytest.mark.parametrize(
    "y,C,match",
    [
        (torch.randn(3, 4), 0.2, "infeasible"),
        (torch.randn(3, 4), 0.0, "C must be"),
        (torch.randn(3, 4), -1.0, "C must be"),
        (torch.randn(3, 4), float("nan"), "C must be"),
        (torch.tensor([[0.1, float("nan")]]), 0.6, "NaN or Inf"),
        (torch.tensor([[0.1, float("inf")]]), 0.6, "NaN or Inf"),
        (torch.zeros(3, 0), 0.5, "M"),
        (torch.tensor(1.0), 1.0, "at least 1 dim"),
        (torch.zeros(3, 2, dtype=torch.int64), 1.0, "floating point"),
    ],
)
def test_bad_input_errors(y, C, match):
    with pytest.raises((ValueError, TypeError), match=match):
        capped_simplex_projection(y, C)


def test_unknown_backend_and_unusable_backend():
    y = torch.randn(3, 4)
    with pytest.raises(ValueError, match="unknown backend"):
        capped_simplex_projection(y, 0.5, backend="nope")
    with pytest.raises(BackendUnavailableError, match="cuda"):
        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
        capped_simplex_projection(y, 0.5, backend="cuda")
    with pytest.raises(BackendUnavailableError, match="M = 65"):
        capped_simplex_projection(torch.randn(2, 65), 0.5, backend="cpu")
    # the reference takes any M and half precision
    assert capped_simplex_projection(torch.randn(2, 65), 0.5, backend="reference").shape == (2, 65)
    xh = capped_simplex_projection(torch.randn(4, 5).half(), 0.5)
    assert xh.dtype == torch.float16 and torch.allclose(xh.float().sum(-1), torch.ones(4), atol=5e-3)


def test_auto_avoids_interpreter_and_env_override(monkeypatch):
    y = torch.randn(4, 5)
    auto = capped_simplex_op.select("auto", y=y, requested="auto")
    assert auto.name in ("cpu", "reference")
    monkeypatch.setenv("SDKD_BACKEND", "reference")
    assert capped_simplex_op.select("auto", y=y, requested="reference").name == "reference"
    torch.testing.assert_close(capped_simplex_projection(y, 0.4), projection_forward_reference(y, 0.4))


def test_opcheck_custom_ops():
    y = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.library.opcheck(torch.ops.sdkd.capped_simplex_projection.default, (y, 0.4, "reference"))
        x = projection_forward_reference(y.detach(), 0.4)
        torch.library.opcheck(
            torch.ops.sdkd.capped_simplex_projection_backward.default, (x, torch.randn(5, 4).double(), 0.4, "reference")
        )
