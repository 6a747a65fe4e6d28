"""Distiller strategies (single, aver, a2d, camkd) against independent computations."""

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from torch import nn
from torch.nn import functional as F

from sdkd.distill import Distiller, a2d_solve, camkd_weights, per_sample_loss
from sdkd.ops import spectral_loss

B, T, CH, H, W = 4, 2, 1, 8, 8


class TinyNet(nn.Module):
    """(B, T, C, H, W) -> (B, T, C, H, W) with two named features."""

    def __init__(self, width: int = 4):
        super().__init__()
        self.conv1 = nn.Conv2d(T * CH, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, T * CH, 3, padding=1)

    def forward(self, x, return_features=False):
        b = x.shape[0]
        h = self.conv1(x.reshape(b, T * CH, H, W))
        a = torch.tanh(h)
        out = self.conv2(a).reshape(b, T, CH, H, W)
        return (out, {"hid": h, "act": a}) if return_features else out


def batch(b=B):
    return torch.randn(b, T, CH, H, W), torch.randn(b, T, CH, H, W)


def qp_scipy(G: np.ndarray, C: float) -> np.ndarray:
    """Independent solve of min 1/2 a^T G a, sum a = 1, 0 <= a <= C (SLSQP, fp64)."""
    M = G.shape[0]
    res = minimize(
        lambda a: 0.5 * a @ G @ a,
        np.full(M, 1.0 / M),
        jac=lambda a: G @ a,
        bounds=[(0.0, C)] * M,
        constraints=[{"type": "eq", "fun": lambda a: a.sum() - 1.0, "jac": lambda a: np.ones_like(a)}],
        method="SLSQP",
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    assert res.success, res.message
    return res.x


def mse_grad(p, target):
    """Analytic d mse(p, target) / dp."""
    return 2.0 * (p - target) / p.numel()


# ----------------------------------------------------------------------------- weight rules
@pytest.mark.parametrize("M,C", [(2, 0.6), (3, 0.5), (4, 0.3), (5, 1.0), (3, 1.0 / 3.0)])
def test_a2d_solve_matches_scipy_qp(M, C):
    V = torch.randn(6, M, 5, dtype=torch.float64)
    V[0, 1] = V[0, 0]  # a degenerate (singular) Gram matrix too
    G = V @ V.transpose(1, 2)
    alpha, _ = a2d_solve(G, C)
    assert alpha.shape == (6, M)
    assert torch.allclose(alpha.sum(1), torch.ones(6, dtype=alpha.dtype), atol=1e-6)
    assert float(alpha.min()) >= -1e-7 and float(alpha.max()) <= C + 1e-7
    for b in range(6):
        ref = qp_scipy(G[b].numpy(), C)
        obj = float(alpha[b] @ G[b] @ alpha[b]) / 2
        obj_ref = float(ref @ G[b].numpy() @ ref) / 2
        assert obj <= obj_ref + 1e-6 * (1 + abs(obj_ref))
        if b > 0:  # positive definite: the minimiser is unique
            np.testing.assert_allclose(alpha[b].numpy(), ref, atol=1e-4)


def test_a2d_two_teachers_closed_form():
    g = torch.randn(2, 20, dtype=torch.float64)
    alpha, _ = a2d_solve((g @ g.T)[None], 0.6)
    a1 = float(torch.dot(g[1] - g[0], g[1]) / (g[0] - g[1]).square().sum())
    a1 = min(max(a1, 0.4), 0.6)
    np.testing.assert_allclose(alpha[0].numpy(), [a1, 1 - a1], atol=1e-6)


def test_camkd_weights():
    e = torch.tensor([[0.1, 2.0, 1.0], [0.5, 0.1, 1.0], [0.9, 0.3, 1.0]])
    w = camkd_weights(e)
    sm = np.exp(e.numpy()) / np.exp(e.numpy()).sum(0)
    np.testing.assert_allclose(w.numpy(), (1 - sm) / 2, rtol=1e-6)
    assert torch.allclose(w.sum(0), torch.ones(3))
    assert torch.all(w[:, 2] == w[0, 2])  # equal errors: equal weights
    assert w[0, 0] > w[2, 0] and w[1, 1] > w[0, 1]  # smaller error, larger weight
    assert torch.equal(camkd_weights(torch.randn(1, 5)), torch.ones(1, 5))


def test_per_sample_loss_paths_agree():
    a, b = batch()
    vec = per_sample_loss(nn.MSELoss(), a, b)
    loop = per_sample_loss(lambda s, t: F.mse_loss(s, t), a, b)
    assert torch.allclose(vec, loop, atol=1e-6)
    assert torch.allclose(vec.mean(), F.mse_loss(a, b), atol=1e-6)


# ----------------------------------------------------------------------------- strategies
def test_single_is_eq11():
    s, t = TinyNet(), TinyNet()
    x, y = batch()
    d = Distiller(s, t, strategy="single", lam=0.7)
    out = d(x, y)
    p = s(x)
    with torch.no_grad():
        tp = t(x)
    ref = F.mse_loss(p, y) + 0.7 * spectral_loss(p, tp)
    assert torch.allclose(out.loss, ref, atol=1e-6)
    assert torch.allclose(out.terms["task"], F.mse_loss(p, y))
    assert torch.allclose(out.terms["kd/0"], spectral_loss(p, tp))
    assert out.loss.requires_grad and not t.training
    assert all(not q.requires_grad for q in t.parameters())
    d.train()
    assert not t.training and s.training
    logged = out.log()
    assert set(logged) >= {"loss", "task", "kd/0", "weight/0"}


def test_aver_equals_mean_teacher_gradient_for_mse():
    s = TinyNet()
    ts = [TinyNet(), TinyNet(), TinyNet()]
    x, y = batch()
    d = Distiller(s, ts, strategy="aver", kd_loss=nn.MSELoss(), lam=2.0)
    out = d(x, y)
    p = s(x)
    tps = [t(x).detach() for t in ts]
    ref = F.mse_loss(p, y) + 2.0 * torch.stack([F.mse_loss(p, tp) for tp in tps]).mean()
    assert torch.allclose(out.loss, ref, atol=1e-6)
    g_aver = torch.autograd.grad(out.loss, list(s.parameters()))
    mean_t = torch.stack(tps).mean(0)
    g_mean = torch.autograd.grad(F.mse_loss(s(x), y) + 2.0 * F.mse_loss(s(x), mean_t), list(s.parameters()))
    for a, b in zip(g_aver, g_mean):
        assert torch.allclose(a, b, atol=1e-6)


def test_camkd_matches_manual():
    s, ts = TinyNet(), [TinyNet(), TinyNet()]
    x, y = batch()
    d = Distiller(s, ts, strategy="camkd", kd_loss=nn.MSELoss(), lam=0.5)
    out = d(x, y)
    p = s(x)
    tps = [t(x).detach() for t in ts]
    e = torch.stack([((tp - y) ** 2).flatten(1).mean(1) for tp in tps])  # (M, B)
    w = (1 - torch.softmax(e, 0)) / 1
    kd = torch.stack([((p - tp) ** 2).flatten(1).mean(1) for tp in tps])
    ref = (((p - y) ** 2).flatten(1).mean(1) + 0.5 * (w * kd).sum(0)).mean()
    assert torch.allclose(out.loss, ref, atol=1e-6)
    assert out.weights.shape == (B, 2)
    assert torch.allclose(out.weights, w.T, atol=1e-6)


def test_camkd_one_teacher_equals_single():
    s, t = TinyNet(), TinyNet()
    x, y = batch()
    a = Distiller(s, t, strategy="camkd")(x, y).loss
    b = Distiller(s, t, strategy="single")(x, y).loss
    assert torch.allclose(a, b, atol=1e-6)


def test_a2d_output_space_batch():
    s, ts = TinyNet(), [TinyNet(), TinyNet(), TinyNet()]
    x, y = batch()
    lam, C = 1.5, 0.5
    d = Distiller(s, ts, strategy="a2d", kd_loss=nn.MSELoss(), lam=lam, C=C)
    out = d(x, y)
    p = s(x)
    tps = [t(x).detach() for t in ts]
    # independent: analytic output gradients, batch-mean as in the AEKD code, scipy QP
    g = torch.stack([(mse_grad(p, y) + lam * mse_grad(p, tp)).detach().flatten(1).mean(0) for tp in tps])
    alpha = qp_scipy((g @ g.T).double().numpy(), C)
    np.testing.assert_allclose(out.weights.numpy(), alpha, atol=1e-4)
    losses = torch.stack([F.mse_loss(p, y) + lam * F.mse_loss(p, tp) for tp in tps])
    ref = (torch.as_tensor(alpha, dtype=torch.float32) * losses).sum()
    assert torch.allclose(out.loss, ref, atol=1e-5)
    assert float(out.terms["kkt_residual"]) < 1e-3
    # alpha is a constant in the backward pass: grad = sum alpha_m grad l_m
    g_out = torch.autograd.grad(out.loss, list(s.parameters()))
    w = out.weights
    g_ref = torch.autograd.grad((w * losses).sum(), list(s.parameters()))
    for a, b in zip(g_out, g_ref):
        assert torch.allclose(a, b, atol=1e-6)


def test_a2d_output_space_per_sample():
    s, ts = TinyNet(), [TinyNet(), TinyNet()]
    x, y = batch()
    C = 0.7
    d = Distiller(s, ts, strategy="a2d", kd_loss=nn.MSELoss(), C=C, per_sample=True)
    out = d(x, y)
    assert out.weights.shape == (B, 2)
    p = s(x)
    tps = [t(x).detach() for t in ts]
    n = p[0].numel()
    for b in range(B):
        g = torch.stack([(2 * (p[b] - y[b]) / n + 2 * (p[b] - tp[b]) / n).detach().flatten() for tp in tps])
        ref = qp_scipy((g @ g.T).double().numpy(), C)
        np.testing.assert_allclose(out.weights[b].numpy(), ref, atol=1e-4)
    ls = torch.stack([((p - y) ** 2 + (p - tp) ** 2).flatten(1).mean(1) for tp in tps])  # (M, B)
    ref_loss = (out.weights.T * ls).sum(0).mean()
    assert torch.allclose(out.loss, ref_loss, atol=1e-6)


def test_a2d_output_space_includes_distilled_features():
    s, ts = TinyNet(), [TinyNet(), TinyNet()]
    x, y = batch()
    lam, fl, C = 1.0, 0.5, 0.6
    d = Distiller(s, ts, strategy="a2d", kd_loss=nn.MSELoss(), lam=lam, C=C, features={"hid": "hid"}, feature_lam=fl)
    out = d(x, y)
    p, fs = s(x, return_features=True)
    vs = []
    for t in ts:
        with torch.no_grad():
            tp, ft = t(x, return_features=True)
        gp = mse_grad(p, y) + lam * mse_grad(p, tp)
        gh = lam * fl * mse_grad(fs["hid"], ft["hid"])
        vs.append(torch.cat([gp.flatten(1), gh.flatten(1)], 1).detach().mean(0))  # per-sample rows, batch mean
    g = torch.stack(vs).double()
    np.testing.assert_allclose(out.weights.numpy(), qp_scipy((g @ g.T).numpy(), C), atol=1e-4)


def test_a2d_params_space_follows_eq12_15():
    torch.manual_seed(0)
    s, ts = TinyNet(), [TinyNet(), TinyNet(), TinyNet()]
    x, y = batch()
    lam, C, lr = 0.8, 0.4, 0.05
    kd = nn.MSELoss()
    params = list(s.parameters())
    # literal eq. 12-13: one full backward per teacher, Gram of the flattened parameter gradients
    grads = []
    for t in ts:
        s.zero_grad()
        with torch.no_grad():
            tp = t(x)
        p = s(x)
        (F.mse_loss(p, y) + lam * kd(p, tp)).backward()
        grads.append(torch.cat([q.grad.flatten() for q in params]).clone())
    Gm = torch.stack(grads).double()
    alpha = qp_scipy((Gm @ Gm.T).numpy(), C)
    expected = (torch.as_tensor(alpha) @ Gm).float()  # eq. 14 direction (descend on it, eq. 15 sign fixed)

    s.zero_grad()
    d = Distiller(s, ts, strategy="a2d", kd_loss=kd, lam=lam, C=C, grad_space="params")
    out = d(x, y)
    assert out.grads_ready
    np.testing.assert_allclose(out.weights.numpy(), alpha, atol=1e-4)
    d.backward(out)
    got = torch.cat([q.grad.flatten() for q in params])
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4)
    with pytest.raises(RuntimeError, match="already"):  # the combined gradient is applied once
        d.backward(out)

    # the ordinary backward of out.loss gives the same gradient (alpha constant)
    s.zero_grad()
    out2 = d(x, y)
    out2.loss.backward()
    got2 = torch.cat([q.grad.flatten() for q in params])
    assert torch.allclose(got2, expected, atol=1e-5, rtol=1e-4)

    # eq. 15: one SGD step along -sum alpha grad decreases the weighted objective
    w = out2.weights.clone()
    before = float(out2.loss.detach())
    torch.optim.SGD(params, lr=lr).step()
    with torch.no_grad():
        after = float((w * torch.stack([F.mse_loss(s(x), y) + lam * kd(s(x), t(x)) for t in ts])).sum())
    assert after < before


def test_a2d_eval_mode_gives_same_weights_without_graph():
    s, ts = TinyNet(), [TinyNet(), TinyNet()]
    x, y = batch()
    d = Distiller(s, ts, strategy="a2d", kd_loss=nn.MSELoss())
    train_out = d(x, y)
    with torch.no_grad():
        eval_out = d(x, y)
    assert not eval_out.loss.requires_grad
    assert torch.allclose(train_out.weights, eval_out.weights, atol=1e-6)
    assert torch.allclose(train_out.loss, eval_out.loss, atol=1e-6)
    with pytest.raises(RuntimeError, match="no graph"):
        d.backward(eval_out)


def test_feature_kd_term():
    s, t = TinyNet(), TinyNet()
    x, y = batch()
    d = Distiller(s, t, kd_loss=nn.MSELoss(), features={"hid": "hid"}, feature_lam=0.3, lam=2.0)
    out = d(x, y)
    p, fs = s(x, return_features=True)
    with torch.no_grad():
        tp, ft = t(x, return_features=True)
    ref = F.mse_loss(p, y) + 2.0 * (F.mse_loss(p, tp) + 0.3 * F.mse_loss(fs["hid"], ft["hid"]))
    assert torch.allclose(out.loss, ref, atol=1e-6)
    assert torch.allclose(out.terms["feat/0"], F.mse_loss(fs["hid"], ft["hid"]))


def test_feature_adapter_module_is_trained():
    s, t = TinyNet(width=4), TinyNet(width=6)
    adapter = nn.Conv2d(4, 6, 1)

    def feat_loss(fs, ft):
        return F.mse_loss(adapter(fs), ft)

    class Adapted(nn.Module):
        def __init__(self):
            super().__init__()
            self.adapter = adapter

        def forward(self, fs, ft):
            return feat_loss(fs, ft)

    d = Distiller(s, t, features={"hid": "hid"}, feature_loss=Adapted())
    assert any(p is adapter.weight for p in d.trainable_parameters())
    assert not any(p is next(t.parameters()) for p in d.trainable_parameters())
    x, y = batch()
    d.backward(d(x, y))
    assert adapter.weight.grad is not None and float(adapter.weight.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="feature_loss"):  # default MSE with different widths
        Distiller(s, t, features={"hid": "hid"})(x, y)


# ----------------------------------------------------------------------------- bad input
def test_bad_configuration_errors():
    s, t = TinyNet(), TinyNet()
    with pytest.raises(ValueError, match="C"):
        Distiller(s, [t, TinyNet(), TinyNet()], strategy="a2d", C=0.3)
    with pytest.raises(ValueError, match="C"):
        Distiller(s, t, strategy="a2d")  # M = 1 needs C >= 1
    with pytest.raises(ValueError, match="single"):
        Distiller(s, [t, TinyNet()], strategy="single")
    with pytest.raises(ValueError, match="strategy"):
        Distiller(s, t, strategy="median")
    with pytest.raises(ValueError, match="grad_space"):
        Distiller(s, [t, TinyNet()], strategy="a2d", grad_space="logits")
    with pytest.raises(ValueError, match="per_sample"):
        Distiller(s, [t, TinyNet()], strategy="a2d", grad_space="params", per_sample=True)
    with pytest.raises(ValueError, match="lam"):
        Distiller(s, t, lam=float("nan"))
    with pytest.raises(ValueError, match="teachers"):
        Distiller(s, None)


def test_device_mismatch_errors():
    s = TinyNet()
    with pytest.raises(ValueError, match=r"teachers\[0\] is on meta"):
        Distiller(s, TinyNet().to("meta"))
    d = Distiller(s, TinyNet())
    x, y = batch()
    with pytest.raises(ValueError, match="x is on meta"):
        d(x.to("meta"), y)


def test_shape_mismatch_errors():
    s, t = TinyNet(), TinyNet()
    d = Distiller(s, t, kd_loss=nn.MSELoss())
    x, y = batch()
    with pytest.raises(ValueError, match=r"teachers\[0\] prediction shape"):
        d(x, y, teacher_outputs=[torch.randn(B, T, CH, H, W + 1)])
    with pytest.raises(ValueError, match="y shape"):
        d(x, y[:, :1])
    with pytest.raises(ValueError, match="teacher_outputs"):
        d(x, y, teacher_outputs=[y, y])


def test_missing_feature_names_error():
    s, t = TinyNet(), TinyNet()
    x, y = batch()
    with pytest.raises(KeyError, match="features: the student has no feature"):
        Distiller(s, t, features={"nope": "hid"})(x, y)
    with pytest.raises(KeyError, match=r"features: teachers\[0\] has no feature"):
        Distiller(s, t, features={"hid": "nope"})(x, y)


def test_nan_loss_is_reported():
    s, t = TinyNet(), TinyNet()
    x, y = batch()
    bad = t(x).detach()
    bad[0, 0, 0, 0, 0] = float("nan")
    for strategy, ts in (("single", [t]), ("aver", [t, t]), ("a2d", [t, t]), ("camkd", [t, t])):
        d = Distiller(s, ts, strategy=strategy, kd_loss=nn.MSELoss())
        with pytest.raises(FloatingPointError, match=r"kd/0.*teachers\[0\] prediction"):
            d(x, y, teacher_outputs=[bad] * len(ts))
    y_bad = y.clone()
    y_bad[1] = float("inf")
    with pytest.raises(FloatingPointError, match="task.*'y'"):
        Distiller(s, t, kd_loss=nn.MSELoss())(x, y_bad)
