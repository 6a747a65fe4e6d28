"""The attention op (LayerNorm(z_h + z + MHSA(z))): reference vs an explicit softmax implementation,
gradients, dispatch and input validation."""

import math

import pytest
import torch

from sdkd.models.layers import FusedAttentionBlock
from sdkd.ops import BackendUnavailableError, attention, available_backends
from sdkd.ops._dispatch import registered_ops
from sdkd.ops.attention import attention_reference, mhsa_reference


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small ops: intra-op threads only add contention on the shared 2-core CI machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_inputs(B, N, D, dtype=torch.float32, bias=True, affine=True, requires_grad=False):
    def r(*shape, scale=1.0):
        return (torch.randn(*shape, dtype=dtype) * scale).requires_grad_(requires_grad)

    return dict(
        z=r(B, N, D),
        z_h=r(B, N, D),
        w_qkv=r(3 * D, D, scale=D**-0.5),
        b_qkv=r(3 * D, scale=0.1) if bias else None,
        w_o=r(D, D, scale=D**-0.5),
        b_o=r(D, scale=0.1) if bias else None,
        ln_weight=(1 + r(D, scale=0.1)) if affine else None,
        ln_bias=r(D, scale=0.1) if affine else None,
    )


def manual(z, z_h, w_qkv, b_qkv, w_o, b_o, ln_weight, ln_bias, num_heads, eps):
    """Explicit per-head softmax(Q K^T / sqrt(d)) V, output projection, residuals, LayerNorm."""
    B, N, D = z.shape
    d = D // num_heads
    qkv = z @ w_qkv.T + (0 if b_qkv is None else b_qkv)
    q, k, v = qkv[..., :D], qkv[..., D : 2 * D], qkv[..., 2 * D :]
    heads = []
    for h in range(num_heads):
        sl = slice(h * d, (h + 1) * d)
        scores = q[..., sl] @ k[..., sl].transpose(-1, -2) / math.sqrt(d)
        p = torch.exp(scores - scores.max(-1, keepdim=True).values)
        heads.append((p / p.sum(-1, keepdim=True)) @ v[..., sl])
    mhsa = torch.cat(heads, -1) @ w_o.T + (0 if b_o is None else b_o)
    s = z + mhsa + (0 if z_h is None else z_h)
    mu = s.mean(-1, keepdim=True)
    var = ((s - mu) ** 2).mean(-1, keepdim=True)
    y = (s - mu) / torch.sqrt(var + eps)
    if ln_weight is not None:
        y = y * ln_weight
    if ln_bias is not None:
        y = y + ln_bias
    return y


@pytest.mark.parametrize(
    "B,N,D,heads",
    [(1, 1, 4, 1), (2, 7, 12, 3), (1, 13, 32, 4), (3, 64, 16, 8), (2, 37, 24, 2)],
)
@pytest.mark.parametrize("serial", [False, True])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-5), (torch.float64, 1e-12)])
def test_reference_matches_manual(B, N, D, heads, serial, dtype, tol):
    inp = make_inputs(B, N, D, dtype)
    if serial:
        inp["z_h"] = None
    ref = attention_reference(**inp, num_heads=heads, eps=1e-5)
    exp = manual(**inp, num_heads=heads, eps=1e-5)
    assert ref.shape == (B, N, D) and ref.dtype == dtype
    torch.testing.assert_close(ref, exp, atol=tol, rtol=tol)


def test_no_bias_no_affine():
    inp = make_inputs(2, 5, 8, bias=False, affine=False)
    out = attention(**inp, num_heads=2)
    torch.testing.assert_close(out, manual(**inp, num_heads=2, eps=1e-5), atol=2e-5, rtol=2e-5)
    # without affine, every token is normalised: zero mean, unit variance over D
    torch.testing.assert_close(out.mean(-1), torch.zeros(2, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.var(-1, unbiased=False), torch.ones(2, 5), atol=1e-3, rtol=0)


def test_eps_is_used():
    inp = make_inputs(1, 3, 4, torch.float64)
    a = attention(**inp, num_heads=2, eps=1e-5)
    b = attention(**inp, num_heads=2, eps=10.0)
    torch.testing.assert_close(b, manual(**inp, num_heads=2, eps=10.0))
    assert not torch.allclose(a, b)


def test_public_op_equals_reference_and_mhsa_is_attention_only():
    inp = make_inputs(2, 9, 16)
    torch.testing.assert_close(attention(**inp, num_heads=4), attention_reference(**inp, num_heads=4), rtol=0, atol=0)
    # MHSA alone: permutation-equivariant over tokens
    z = inp["z"]
    perm = torch.randperm(z.shape[1])
    m = mhsa_reference(z, inp["w_qkv"], inp["b_qkv"], inp["w_o"], inp["b_o"], 4)
    m_perm = mhsa_reference(z[:, perm], inp["w_qkv"], inp["b_qkv"], inp["w_o"], inp["b_o"], 4)
    torch.testing.assert_close(m[:, perm], m_perm, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("serial", [False, True])
def test_gradcheck_float64(serial):
    inp = make_inputs(2, 3, 4, torch.float64, requires_grad=True)
    if serial:
        inp["z_h"] = None
    names = [k for k, v in inp.items() if v is not None]

    def f(*args):
        kw = dict(inp)
        kw.update(zip(names, args))
        return attention(**kw, num_heads=2, eps=1e-5)

    assert torch.autograd.gradcheck(f, tuple(inp[k] for k in names), eps=1e-6, atol=1e-7, fast_mode=True)


def test_grads_match_manual():
    inp = make_inputs(2, 6, 8, torch.float64, requires_grad=True)
    g = torch.randn(2, 6, 8, dtype=torch.float64)
    leaves = [v for v in inp.values() if v is not None]
    ga = torch.autograd.grad(attention(**inp, num_heads=2), leaves, g)
    gm = torch.autograd.grad(manual(**inp, num_heads=2, eps=1e-5), leaves, g)
    for a, m in zip(ga, gm):
        torch.testing.assert_close(a, m, atol=1e-10, rtol=1e-10)


def test_registered_with_dispatcher(monkeypatch):
    op = registered_ops()["attention"]
    assert op.backend_names()[-1] == "reference"
    assert available_backends()["attention"]["reference"] == []
    inp = make_inputs(1, 4, 8)
    ref = attention_reference(**inp, num_heads=2)
    torch.testing.assert_close(attention(**inp, num_heads=2, backend="reference"), ref, rtol=0, atol=0)
    monkeypatch.setenv("SDKD_BACKEND", "reference")
    torch.testing.assert_close(attention(**inp, num_heads=2), ref, rtol=0, atol=0)
    with pytest.raises(ValueError, match="unknown backend"):
        attention(**inp, num_heads=2, backend="nope")


def test_explicit_backend_that_cannot_run_lists_reasons():
    from sdkd.ops._dispatch import Backend

    op = registered_ops()["attention"]
    fake = Backend("fake", lambda *a: None, lambda **kw: [f"d_model {kw['z'].shape[-1]} unsupported"])
    op.backends.insert(0, fake)
    try:
        inp = make_inputs(1, 4, 8)
        with pytest.raises(BackendUnavailableError, match="d_model 8 unsupported"):
            attention(**inp, num_heads=2, backend="fake")
        # auto skips the backend that cannot take the inputs
        torch.testing.assert_close(attention(**inp, num_heads=2), attention_reference(**inp, num_heads=2))
    finally:
        op.backends.remove(fake)


@pytest.mark.parametrize(
    "change,exc,match",
    [
        (dict(num_heads=3), ValueError, "num_heads=3 must divide d_model=8"),
        (dict(num_heads=0), ValueError, "num_heads must be a positive int"),
        (dict(eps=0.0), ValueError, "eps must be a positive"),
        (dict(z=torch.randn(4, 8)), ValueError, r"tokens \(B, N, D\)"),
        (dict(z=torch.randint(0, 3, (2, 4, 8))), TypeError, "floating point"),
        (dict(z_h=torch.randn(2, 5, 8)), ValueError, "z_h shape"),
        (dict(w_qkv=torch.randn(8, 8)), ValueError, r"w_qkv must have shape \(24, 8\)"),
        (dict(w_o=torch.randn(8, 4)), ValueError, r"w_o must have shape \(8, 8\)"),
        (dict(b_qkv=torch.randn(8)), ValueError, r"b_qkv must have shape \(24,\)"),
        (dict(ln_weight=torch.randn(4)), ValueError, "ln_weight must have shape"),
        (dict(b_o=torch.randn(8, dtype=torch.float64)), TypeError, "b_o has dtype"),
        (dict(w_qkv=None), ValueError, "w_qkv is required"),
    ],
)
def test_bad_inputs(change, exc, match):
    inp = dict(make_inputs(2, 4, 8), num_heads=2, eps=1e-5)
    inp.update(change)
    with pytest.raises(exc, match=match):
        attention(**inp)


def test_fused_attention_block():
    blk = FusedAttentionBlock(16, 4)
    z, z_h = torch.randn(2, 10, 16), torch.randn(2, 10, 16)
    out = blk(z, z_h)
    exp = attention_reference(z, z_h, blk.w_qkv, blk.b_qkv, blk.w_o, blk.b_o, blk.ln_weight, blk.ln_bias, 4, 1e-5)
    torch.testing.assert_close(out, exp, rtol=0, atol=0)
    out2, z_l = blk(z, z_h, return_low=True)
    torch.testing.assert_close(out2, out, rtol=0, atol=0)
    torch.testing.assert_close(z_l, z + mhsa_reference(z, blk.w_qkv, blk.b_qkv, blk.w_o, blk.b_o, 4))
    serial = blk(z)
    torch.testing.assert_close(
        serial, manual(z, None, *[p.detach() for p in blk.parameters()], 4, 1e-5), atol=2e-5, rtol=2e-5
    )
    (out.square().sum() + serial.sum()).backward()
    for name, p in blk.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    with pytest.raises(ValueError, match="num_heads=3 must divide dim=16"):
        FusedAttentionBlock(16, 3)
