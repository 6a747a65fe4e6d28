"""Teachers ST-AlterNet and SimVP: shapes at the paper's dataset presets, features, gradients,
determinism, a short overfit, configuration and errors."""

import pytest
import torch
import torch.nn.functional as F

from sdkd.models import build_model, list_models
from sdkd.models.simvp import SimVP, SimVPConfig
from sdkd.models.st_alternet import STAlterNet, STAlterNetConfig


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small ops: intra-op threads only add contention on the shared 2-core CI machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# (T_in, C, H, W), T_out — the paper's datasets plus a size no power of two divides
PRESETS = {
    "nse": ((10, 1, 64, 64), 10),
    "weatherbench": ((6, 3, 32, 64), 36),
    "weatherbench_12h": ((12, 5, 32, 64), 12),
    "taxibj": ((4, 2, 32, 32), 4),
    "taxibj_plus": ((5, 2, 128, 128), 15),
    "rbc": ((13, 1, 32, 480), 12),
    "odd_37x49": ((3, 2, 37, 49), 5),
}
VARIANTS = {
    "st_alternet-parallel": ("st_alternet", {}),
    "st_alternet-serial": ("st_alternet", {"mode": "serial"}),
    "simvp-gsta": ("simvp", {}),
    "simvp-incep": ("simvp", {"translator": "incep"}),
}
TINY = {
    "st_alternet-parallel": ("st_alternet", dict(hid_S=8, hid_T=32, N_T=2, num_heads=4)),
    "st_alternet-serial": ("st_alternet", dict(hid_S=8, hid_T=32, N_T=2, num_heads=4, mode="serial")),
    "simvp-gsta": ("simvp", dict(hid_S=8, hid_T=32, N_T=3, mlp_ratio=2.0)),
    "simvp-incep": ("simvp", dict(hid_S=8, hid_T=32, N_T=2, translator="incep", groups=4)),
    "simvp-van": ("simvp", dict(hid_S=8, hid_T=32, N_T=3, mlp_ratio=2.0, translator="van")),
}
# the default-config variants run at every preset; the others at every preset but the two largest
FULL = [
    pytest.param(v, p, id=f"{v}-{p}")
    for v in VARIANTS
    for p in PRESETS
    if v in ("st_alternet-parallel", "simvp-gsta") or p not in ("taxibj_plus", "rbc")
]


def test_registered():
    assert {"st_alternet", "simvp"} <= set(list_models())


@pytest.mark.parametrize("variant,preset", FULL)
def test_default_model_at_preset_shapes(variant, preset):
    name, cfg = VARIANTS[variant]
    in_shape, t_out = PRESETS[preset]
    model = build_model(name, in_shape, t_out, **cfg).eval()
    x = torch.randn(1, *in_shape)
    with torch.no_grad():
        y, feats = model(x, return_features=True)
    assert y.shape == (1, t_out, *in_shape[1:])
    assert torch.isfinite(y).all()
    assert feats["enc"].shape[:2] == (1, in_shape[0] * model.config.hid_S)
    assert all(torch.isfinite(f).all() for f in feats.values())


def test_st_alternet_default_is_a_real_teacher():
    model = build_model("st_alternet", (10, 1, 64, 64), 10)
    n = sum(p.numel() for p in model.parameters())
    assert 2e6 < n < 2e7, n
    assert model.config.N_S == 4 and build_model("st_alternet", (4, 2, 32, 32)).config.N_S == 2


@pytest.mark.parametrize("translator,expected", [("gsta", 9.96e6), ("incep", 13.79e6), ("van", 9.48e6)])
def test_simvp_matches_openstl_parameter_count(translator, expected):
    # OpenSTL model zoo, TaxiBJ (hid_S 32, hid_T 256, N_S 2, N_T 8): gSTA 9.96 M, IncepU 13.79 M, VAN 9.48 M
    model = build_model("simvp", (4, 2, 32, 32), 4, translator=translator)
    n = sum(p.numel() for p in model.parameters())
    assert abs(n - expected) < 0.006e6, n


def test_van_translator_is_large_kernel_attention():
    """SimVP-VAN (Table 5's VAN teacher): LKA multiplies its input by dw5x5 -> dw7x7 (dilation 3) -> 1x1,
    a 21x21 receptive field; the default model runs at the WeatherBench 6 -> 36 shape."""
    from sdkd.models.van import LargeKernelAttention, VANBlock

    lka = LargeKernelAttention(4)
    assert (lka.conv0.kernel_size, lka.conv0.groups) == ((5, 5), 4)
    assert (lka.conv_spatial.kernel_size, lka.conv_spatial.dilation, lka.conv_spatial.groups) == ((7, 7), (3, 3), 4)
    x = torch.randn(2, 4, 31, 33)
    with torch.no_grad():
        attn = lka.conv1(lka.conv_spatial(lka.conv0(x)))
        torch.testing.assert_close(lka(x), x * attn)
        # receptive field: a unit impulse spreads over exactly 2 + 3 * 3 = 11 pixels each side
        d = torch.zeros(1, 4, 31, 33)
        d[..., 15, 16] = 1.0
        r = (lka.conv_spatial(lka.conv0(d)) - lka.conv_spatial(lka.conv0(torch.zeros_like(d)))).abs().sum((0, 1))
        rows, cols = torch.nonzero(r > 0, as_tuple=True)
        assert (rows.min().item(), rows.max().item(), cols.min().item(), cols.max().item()) == (4, 26, 5, 27)
    model = build_model("simvp", (6, 3, 32, 64), 36, translator="van").eval()
    blocks = [layer.block for layer in model.translator.layers]
    assert len(blocks) == model.config.N_T and all(isinstance(b, VANBlock) for b in blocks)
    with torch.no_grad():
        y = model(torch.randn(1, 6, 3, 32, 64))
    assert y.shape == (1, 36, 3, 32, 64) and torch.isfinite(y).all()


@pytest.mark.parametrize("mode", ["parallel", "serial"])
def test_st_alternet_features(mode):
    model = build_model("st_alternet", (3, 2, 20, 28), 4, **{**TINY["st_alternet-parallel"][1], "mode": mode}).eval()
    x = torch.randn(2, 3, 2, 20, 28)
    with torch.no_grad():
        y, feats = model(x, return_features=True)
        y_plain = model(x)
    torch.testing.assert_close(y, y_plain, rtol=0, atol=0)  # the feature path computes the same prediction
    names = ["enc"] + [f"block{i}{s}" for i in range(2) for s in ("", ".high", ".low")]
    assert sorted(feats) == sorted(names)
    assert feats["enc"].shape == (2, 3 * 8, 10, 14)
    for i in range(2):
        for s in ("", ".high", ".low"):
            assert feats[f"block{i}{s}"].shape == (2, 32, 10, 14)
    # the block output is LayerNorm over channels of (high + low) followed by a residual MLP
    blk = model.blocks[1]
    s_ = feats["block1.low"] + (feats["block1.high"] if mode == "parallel" else 0)
    z = F.layer_norm(s_.permute(0, 2, 3, 1), (32,), blk.attn.ln_weight, blk.attn.ln_bias).permute(0, 3, 1, 2)
    torch.testing.assert_close(feats["block1"], z + blk.mlp(z), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("translator,n_blocks", [("gsta", 3), ("incep", 4), ("van", 3)])
def test_simvp_features(translator, n_blocks):
    name, cfg = TINY[f"simvp-{translator}"]
    model = build_model(name, (3, 2, 20, 28), 3, **cfg).eval()
    x = torch.randn(2, 3, 2, 20, 28)
    with torch.no_grad():
        y, feats = model(x, return_features=True)
        torch.testing.assert_close(y, model(x), rtol=0, atol=0)
    assert sorted(feats) == sorted(["enc"] + [f"block{i}" for i in range(n_blocks)])
    assert feats[f"block{n_blocks - 1}"].shape == feats["enc"].shape == (2, 24, 10, 14)


@pytest.mark.parametrize("variant", list(TINY))
def test_gradients_reach_every_parameter(variant):
    name, cfg = TINY[variant]
    model = build_model(name, (3, 2, 13, 18), 5, **cfg)  # odd size and T_out != T_in: all heads in use
    x, target = torch.randn(2, 3, 2, 13, 18), torch.randn(2, 5, 2, 13, 18)
    y, feats = model(x, return_features=True)
    (F.mse_loss(y, target) + sum(f.square().mean() for f in feats.values()) * 1e-3).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("variant", list(TINY))
def test_seeded_determinism(variant):
    name, cfg = TINY[variant]
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        model = build_model(name, (3, 1, 16, 16), 2, **cfg)
        x = torch.randn(2, 3, 1, 16, 16)
        outs.append((model.state_dict(), model(x)))
    (sd_a, y_a), (sd_b, y_b) = outs
    for k in sd_a:
        torch.testing.assert_close(sd_a[k], sd_b[k], rtol=0, atol=0)
    torch.testing.assert_close(y_a, y_b, rtol=0, atol=0)
    torch.manual_seed(8)
    assert not torch.equal(build_model(name, (3, 1, 16, 16), 2, **cfg)(x), y_a)


@pytest.mark.parametrize("variant", list(TINY))
def test_overfits_one_batch(variant):
    name, cfg = TINY[variant]
    model = build_model(name, (3, 1, 16, 16), 2, **cfg)
    t = torch.linspace(0, 1, 16)
    base = torch.sin(6.28 * t)[:, None] * torch.cos(6.28 * t)[None, :]
    x = torch.stack([base.roll(k, -1) for k in range(3)])[None, :, None].repeat(2, 1, 1, 1, 1)
    x[1] = -x[1]
    y = torch.stack([base.roll(k, -1) for k in range(3, 5)])[None, :, None].repeat(2, 1, 1, 1, 1)
    y[1] = -y[1]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert min(losses[-5:]) < 0.2 * losses[0], losses


@pytest.mark.parametrize("variant", list(TINY))
def test_get_config_rebuilds(variant):
    name, cfg = TINY[variant]
    model = build_model(name, (3, 2, 16, 20), 4, **cfg)
    conf = model.get_config()
    assert all(isinstance(v, (int, float, str, list)) for v in conf.values())  # plain data for checkpoints
    clone = build_model(name, **conf)
    clone.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 2, 16, 20)
    model.eval(), clone.eval()
    with torch.no_grad():
        torch.testing.assert_close(clone(x), model(x), rtol=0, atol=0)


def test_classes_and_configs():
    cfg = STAlterNetConfig.for_shape((4, 2, 32, 32), hid_T=64, num_heads=4)
    m = STAlterNet((4, 2, 32, 32), 4, config=cfg)
    assert m.config.hid_T == 64 and m.config.N_S == 2
    m2 = SimVP((4, 2, 32, 32), 6, config=SimVPConfig.for_shape((4, 2, 32, 32), hid_T=32, N_T=2), translator="incep")
    assert m2.config.translator == "incep" and m2(torch.randn(1, 4, 2, 32, 32)).shape == (1, 6, 2, 32, 32)


@pytest.mark.parametrize(
    "name,cfg,exc,match",
    [
        ("st_alternet", dict(nope=1), TypeError, "unknown config key"),
        ("st_alternet", dict(hid_T=64, num_heads=3), ValueError, "num_heads=3 must divide hid_T=64"),
        ("st_alternet", dict(mode="sideways"), ValueError, "mode must be one of"),
        ("st_alternet", dict(hid_T=30, num_heads=2), ValueError, "multiple of 4"),
        ("st_alternet", dict(N_T=0), ValueError, "N_T must be a positive int"),
        ("simvp", dict(translator="lstm"), ValueError, "translator must be one of"),
        ("simvp", dict(translator="incep", N_T=1), ValueError, "N_T >= 2"),
        ("simvp", dict(hid_S=0), ValueError, "hid_S must be a positive int"),
        ("simvp", dict(foo=2), TypeError, "unknown config key"),
    ],
)
def test_bad_config(name, cfg, exc, match):
    with pytest.raises(exc, match=match):
        build_model(name, (3, 1, 16, 16), 3, **cfg)


@pytest.mark.parametrize("variant", ["st_alternet-parallel", "simvp-gsta"])
def test_bad_input_shape(variant):
    name, cfg = TINY[variant]
    model = build_model(name, (3, 1, 16, 16), 3, **cfg)
    with pytest.raises(ValueError, match=r"expected input \(B, 3, 1, 16, 16\)"):
        model(torch.randn(1, 4, 1, 16, 16))
    with pytest.raises(ValueError, match="expected input"):
        model(torch.randn(3, 1, 16, 16))


@pytest.mark.parametrize("variant", list(TINY))
def test_autocast_bf16_on_cpu(variant):
    """CPU autocast reproduces the mixed dtypes CUDA autocast gives the attention op (parallel mode: fp32
    ``z`` from ``proj + pos``, bf16 ``z_h`` from the conv, fp32 weights): it runs, in bf16, near fp32,
    and trains (gradients reach the fp32 parameters)."""
    name, cfg = TINY[variant]
    model = build_model(name, (3, 2, 13, 18), 5, **cfg)
    x = torch.randn(2, 3, 2, 13, 18)
    with torch.no_grad():
        y32 = model(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x)
    assert y.shape == y32.shape and torch.isfinite(y).all()
    err = (y.float() - y32).abs().max().item()
    assert err <= 0.05 * y32.abs().max().item(), err
    y.float().square().mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads.values())
    if name == "st_alternet":
        assert any(".attn." in n and g.abs().sum() > 0 for n, g in grads.items())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("variant", list(TINY))
def test_cuda_matches_cpu(variant, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    name, cfg = TINY[variant]
    model = build_model(name, (3, 2, 13, 18), 5, **cfg).eval()
    x = torch.randn(2, 3, 2, 13, 18)
    with torch.no_grad():
        y_cpu = model(x)
        y_gpu = model.cuda()(x.cuda())
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y_bf16 = model(x.cuda())
    torch.testing.assert_close(y_gpu.cpu(), y_cpu, atol=1e-4, rtol=1e-3)
    assert torch.isfinite(y_bf16).all() and y_bf16.shape == y_cpu.shape
