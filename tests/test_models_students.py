"""Students ``unet``, ``resnet``, ``mixer``: shapes at every preset, awkward sizes, features,
gradients, determinism, a one-batch overfit and presets (the <= 1/5-of-teacher size rule:
test_student_size_rule.py)."""

import pytest
import torch

from sdkd.models import build_model, build_preset, list_presets, load_model_config

STUDENTS = ["unet", "resnet", "mixer"]
PAPER_PRESETS = ["nse", "weatherbench", "weatherbench_12h", "taxibj", "taxibj_plus", "taxibj_plus_30min", "rbc"]


@pytest.fixture(autouse=True)
def _one_thread():
    """The test machine is shared: one intra-op thread avoids OpenMP contention (10x faster here)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


SMALL = {  # light configs for the training-style tests
    "unet": dict(widths=(8, 16, 16, 32)),
    "resnet": dict(widths=(8, 16), depths=(2, 2), strides=(1, 2)),
    "mixer": dict(patch_size=4, dim=32, depth=2),
}


def test_presets_cover_paper_shapes():
    assert set(PAPER_PRESETS) <= set(list_presets())
    spec = load_model_config("nse", "unet")
    assert spec["in_shape"] == (10, 1, 64, 64) and spec["out_frames"] == 10 and spec["role"] == "student"
    assert load_model_config("ns", "st_alternet")["role"] == "teacher"  # alias
    assert load_model_config("taxibj_plus", "mixer")["out_frames"] == 15
    with pytest.raises(ValueError, match="no model preset"):
        load_model_config("nope", "unet")
    with pytest.raises(ValueError, match="no preset for model"):
        load_model_config("nse", "nope")


@pytest.mark.parametrize("dataset", PAPER_PRESETS)
@pytest.mark.parametrize("name", STUDENTS)
def test_preset_shapes_and_features(dataset, name):
    model = build_preset(dataset, name).eval()
    spec = load_model_config(dataset, name)
    T, C, H, W = spec["in_shape"]
    x = torch.randn(1, T, C, H, W)
    with torch.no_grad():
        y, feats = model(x, return_features=True)
    assert y.shape == (1, spec["out_frames"], C, H, W)
    assert torch.isfinite(y).all()
    assert "enc" in feats and len(feats) >= 3
    for key, f in feats.items():
        assert f.dim() == 4 and f.shape[0] == 1, key
        assert torch.isfinite(f).all(), key


@pytest.mark.parametrize("name", STUDENTS)
@pytest.mark.parametrize("in_shape,out_frames", [((3, 2, 37, 49), 5), ((4, 1, 13, 7), 2), ((2, 3, 32, 24), 2)])
def test_awkward_sizes_and_readout(name, in_shape, out_frames):
    model = build_model(name, in_shape, out_frames)
    x = torch.randn(2, *in_shape)
    y = model(x)
    assert y.shape == (2, out_frames, *in_shape[1:])
    # the crop keeps the top-left block: changing one sample changes only that sample's output
    x2 = x.clone()
    x2[1] += 1.0
    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x2)
    torch.testing.assert_close(a[0], b[0])
    assert not torch.allclose(a[1], b[1])


def test_feature_shapes():
    x = torch.randn(2, 4, 2, 37, 49)  # padded to 40x56 (unet: multiple of 8)
    _, f = build_model("unet", (4, 2, 37, 49), 4)(x, return_features=True)
    assert f["enc0"].shape == (2, 16, 40, 56) and f["enc"].shape == (2, 128, 5, 7)
    assert f["dec0"].shape == (2, 16, 40, 56) and f["dec2"].shape == (2, 64, 10, 14)
    _, f = build_model("resnet", (4, 2, 37, 49), 4)(x, return_features=True)
    assert f["stem"].shape == (2, 32, 40, 52) and f["enc"].shape == (2, 96, 10, 13)
    _, f = build_model("mixer", (4, 2, 37, 49), 4, patch_size=8, dim=32, depth=2)(x, return_features=True)
    assert f["embed"].shape == (2, 32, 5, 7) and f["block1"].shape == (2, 32, 5, 7) and "enc" in f


@pytest.mark.parametrize("name", STUDENTS)
def test_gradients_reach_every_parameter(name):
    model = build_model(name, (3, 2, 20, 18), 4, **SMALL[name])
    y, feats = model(torch.randn(2, 3, 2, 20, 18), return_features=True)
    (y.square().mean() + feats["enc"].square().mean()).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", STUDENTS)
def test_seeded_determinism(name):
    x = torch.randn(2, 4, 1, 24, 24)
    torch.manual_seed(7)
    m1 = build_model(name, (4, 1, 24, 24), 6)
    torch.manual_seed(7)
    m2 = build_model(name, (4, 1, 24, 24), 6)
    for (k1, v1), (k2, v2) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert k1 == k2
        torch.testing.assert_close(v1, v2, rtol=0, atol=0)
    torch.testing.assert_close(m1(x), m2(x), rtol=0, atol=0)
    torch.manual_seed(8)
    m3 = build_model(name, (4, 1, 24, 24), 6)
    assert not torch.equal(m1(x), m3(x))


@pytest.mark.parametrize("name", STUDENTS)
def test_overfit_one_batch(name):
    in_shape, out_frames = (4, 1, 16, 16), 3
    model = build_model(name, in_shape, out_frames, **SMALL[name])
    x = torch.randn(4, *in_shape)
    # a learnable target: a smooth function of the input frames
    y = torch.stack([x[:, -1] * 0.5 + x[:, -2] * 0.3, x[:, 0].roll(1, dims=-1), x.mean(1)], dim=1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0], (name, losses[0], losses[-1])


@pytest.mark.parametrize("name", STUDENTS)
def test_residual_adds_last_frame(name):
    model = build_model(name, (3, 2, 16, 16), 2, residual=True, **SMALL[name]).eval()
    head = model.head
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    x = torch.randn(2, 3, 2, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), x[:, -1:].expand(2, 2, 2, 16, 16))


@pytest.mark.parametrize("name", STUDENTS)
def test_bad_input_is_named(name):
    model = build_model(name, (3, 2, 16, 16), 2, **SMALL[name])
    with pytest.raises(ValueError, match=name):
        model(torch.randn(2, 3, 2, 16, 17))
    with pytest.raises(ValueError, match=name):
        model(torch.randn(3, 2, 16, 16))


def test_bad_config_errors():
    with pytest.raises(ValueError, match="norm"):
        build_model("unet", (2, 1, 16, 16), 2, norm="layer")
    with pytest.raises(ValueError, match="act"):
        build_model("resnet", (2, 1, 16, 16), 2, act="tanh")
    with pytest.raises(ValueError, match="equal lengths"):
        build_model("resnet", (2, 1, 16, 16), 2, widths=(8, 16), depths=(2,))
    with pytest.raises(ValueError, match="widths"):
        build_model("unet", (2, 1, 16, 16), 2, widths=())
    with pytest.raises(TypeError):
        build_model("mixer", (2, 1, 16, 16), 2, nonsense=1)
