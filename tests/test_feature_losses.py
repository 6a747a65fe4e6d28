"""FeatureAdapter, FeatureMSE, ABLoss and FeatureKD against explicit formulas."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sdkd.losses import ABLoss, FeatureAdapter, FeatureKD, FeatureMSE, MissingFeatureError, SpectralKD, ab_loss


def _conv_bn_explicit(x, adapter, train=True):
    """1x1 conv as an einsum, then BatchNorm with biased batch statistics (train) or running stats (eval)."""
    conv, bn = adapter.proj[0], adapter.proj[1]
    y = torch.einsum("oc,nchw->nohw", conv.weight[:, :, 0, 0], x)
    if train:
        mean, var = y.mean(dim=(0, 2, 3)), y.var(dim=(0, 2, 3), unbiased=False)
    else:
        mean, var = bn.running_mean, bn.running_var
    y = (y - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + bn.eps)
    return y * bn.weight[None, :, None, None] + bn.bias[None, :, None, None]


@pytest.mark.parametrize(
    "s_shape, t_shape, resize",
    [
        ((2, 6, 16, 12), (2, 4, 8, 6), "pool"),  # larger student: adaptive average pooling
        ((2, 6, 5, 7), (2, 4, 10, 9), "bilinear"),  # smaller student: bilinear
        ((2, 6, 16, 5), (2, 4, 8, 10), "bilinear"),  # mixed: bilinear
        ((3, 6, 8, 8), (3, 4, 8, 8), None),  # same size: conv + BN only
    ],
)
def test_adapter_4d_matches_explicit_formula(s_shape, t_shape, resize):
    x = torch.randn(s_shape, dtype=torch.float64)
    adapter = FeatureAdapter.from_shapes(s_shape, t_shape).double()
    y = adapter(x)
    assert y.shape == t_shape
    if resize == "pool":
        r = F.adaptive_avg_pool2d(x, t_shape[-2:])
    elif resize == "bilinear":
        r = F.interpolate(x, size=t_shape[-2:], mode="bilinear", align_corners=False)
    else:
        r = x
    torch.testing.assert_close(y, _conv_bn_explicit(r, adapter))
    adapter.eval()
    torch.testing.assert_close(adapter(x), _conv_bn_explicit(r, adapter, train=False))


def test_adapter_init_is_he_normal_fan_out_and_bn_identity():
    adapter = FeatureAdapter(256, 512)
    w = adapter.proj[0].weight
    assert adapter.proj[0].bias is None
    assert abs(w.std().item() / math.sqrt(2 / 512) - 1) < 0.02
    assert abs(w.mean().item()) < 0.05 * math.sqrt(2 / 512)
    bn = adapter.proj[1]
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


def test_adapter_identity_when_widths_match_and_optional_bn():
    adapter = FeatureAdapter(4, 4)
    assert isinstance(adapter.proj, nn.Identity)
    x = torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(adapter(x), x)
    torch.testing.assert_close(adapter(x, size=(3, 3)), F.adaptive_avg_pool2d(x, 3))
    conv_only = FeatureAdapter(4, 4, project=True, bn=False)
    assert isinstance(conv_only.proj, nn.Conv2d)
    torch.testing.assert_close(conv_only(x), F.conv2d(x, conv_only.proj.weight))


def test_adapter_5d_batch_fold_is_per_frame():
    x = torch.randn(2, 3, 5, 8, 8, dtype=torch.float64)
    adapter = FeatureAdapter.from_shapes((2, 3, 5, 8, 8), (2, 3, 7, 4, 4), bn=False).double()
    assert adapter.time_fold == "batch"
    y = adapter(x)
    assert y.shape == (2, 3, 7, 4, 4)
    conv = adapter.proj
    for k in range(3):  # one shared connector, applied frame by frame
        torch.testing.assert_close(y[:, k], conv(F.adaptive_avg_pool2d(x[:, k], 4)))


def test_adapter_5d_channel_fold_maps_frame_counts():
    x = torch.randn(2, 3, 5, 6, 6, dtype=torch.float64)
    adapter = FeatureAdapter.from_shapes(x.shape, (2, 4, 2, 6, 6), bn=False).double()
    assert adapter.time_fold == "channels" and adapter.proj.in_channels == 15 and adapter.proj.out_channels == 8
    y = adapter(x)
    assert y.shape == (2, 4, 2, 6, 6)
    ref = F.conv2d(x.reshape(2, 15, 6, 6), adapter.proj.weight).reshape(2, 4, 2, 6, 6)
    torch.testing.assert_close(y, ref)
    assert adapter.output_shape(x.shape) == (2, 4, 2, 6, 6)


def test_feature_mse_is_mse_of_adapted_student_and_trains_the_adapter():
    s = torch.randn(4, 8, 12, 12)
    t = torch.randn(4, 3, 6, 6)
    loss_fn = FeatureMSE.from_shapes(s.shape, t.shape)
    loss = loss_fn(s, t)
    torch.testing.assert_close(loss, F.mse_loss(loss_fn.adapter(s), t))
    loss.backward()
    assert loss_fn.adapter.proj[0].weight.grad.abs().sum() > 0
    # the same object built from channel counts gets its size from the teacher at call time
    by_channels = FeatureMSE(8, 3)
    by_channels.load_state_dict(loss_fn.state_dict())
    torch.testing.assert_close(by_channels(s, t), loss)
    # equal shapes: plain MSE, no parameters
    same = FeatureMSE.from_shapes(t.shape, t.shape)
    assert not list(same.parameters())
    s2 = torch.randn_like(t)
    torch.testing.assert_close(same(s2, t), F.mse_loss(s2, t))


def _ab_explicit(s_conn, t, margin=1.0):
    """The original code's masked form: ((s <= mu) & (t > 0)) (s - mu)^2 + ((s > -mu) & (t <= 0)) (s + mu)^2."""
    pos = ((s_conn <= margin) & (t > 0)).to(s_conn.dtype)
    neg = ((s_conn > -margin) & (t <= 0)).to(s_conn.dtype)
    return pos * (s_conn - margin) ** 2 + neg * (s_conn + margin) ** 2


@pytest.mark.parametrize("reduction", ["mean", "batchmean", "sum"])
@pytest.mark.parametrize("margin", [1.0, 0.5])
def test_ab_loss_matches_explicit_formula(reduction, margin):
    s = torch.randn(3, 6, 8, 8, dtype=torch.float64)
    t = torch.randn(3, 10, 8, 8, dtype=torch.float64)
    t[0, 0, 0, :4] = 0.0  # t = 0 counts as inactive
    loss_fn = ABLoss.from_shapes(s.shape, t.shape, margin=margin, reduction=reduction).double()
    assert "margin" in repr(loss_fn)
    s_conn = loss_fn.adapter(s)
    per_elem = _ab_explicit(s_conn, t, margin)
    expected = {"mean": per_elem.mean(), "batchmean": per_elem.sum() / 3, "sum": per_elem.sum()}[reduction]
    torch.testing.assert_close(loss_fn(s, t), expected)


def test_ab_loss_gradient_pushes_across_the_boundary():
    s = torch.tensor([[0.5, -0.5, 2.0, -2.0]], requires_grad=True)
    t = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    ab_loss(s, t, reduction="sum").backward()
    # t > 0 and s < mu: push s up; t <= 0 and s > -mu: push down; beyond the margin: no gradient
    torch.testing.assert_close(s.grad, torch.tensor([[-1.0, 1.0, 0.0, 0.0]]))
    assert ABLoss(4, 4).adapter.proj[0].weight.shape == (4, 4, 1, 1)  # the connector projects at equal widths


def test_ab_loss_5d_features_and_no_teacher_gradient():
    s = torch.randn(2, 3, 4, 6, 6)
    t = torch.randn(2, 3, 8, 6, 6, requires_grad=True)
    loss_fn = ABLoss.from_shapes(s.shape, t.shape, reduction="batchmean")
    loss = loss_fn(s, t)
    torch.testing.assert_close(loss, _ab_explicit(loss_fn.adapter(s), t.detach()).sum() / 2)
    loss.backward()
    assert t.grad is None or torch.all(t.grad == 0)


def _feature_dicts():
    sf = {"enc.0": torch.randn(2, 4, 16, 16), "mid": torch.randn(2, 8, 8, 8)}
    tf = {"enc0": torch.randn(2, 16, 16, 16), "latent": torch.randn(2, 32, 4, 4), "hi": torch.randn(2, 32, 4, 4)}
    return sf, tf


@pytest.mark.parametrize("loss", ["mse", "ab", "spectral"])
def test_feature_kd_is_the_weighted_sum_of_pair_losses(loss):
    sf, tf = _feature_dicts()
    kd = FeatureKD({"enc.0": "enc0", "mid": "latent"}, sf, tf, loss=loss, weights={"mid": 0.5})
    value = kd(sf, tf)
    comp = kd.components(sf, tf)
    assert list(comp) == ["enc.0->enc0", "mid->latent"]
    torch.testing.assert_close(value, sum(comp.values()))
    expected_type = {"mse": FeatureMSE, "ab": ABLoss, "spectral": type(kd.losses[0])}[loss]
    assert all(isinstance(m, expected_type) for m in kd.losses)
    ref = kd.losses[0](sf["enc.0"], tf["enc0"]) + 0.5 * kd.losses[1](sf["mid"], tf["latent"])
    torch.testing.assert_close(value, ref)
    if loss == "spectral":
        assert isinstance(kd.losses[0].criterion, SpectralKD)
        torch.testing.assert_close(
            kd.losses[1](sf["mid"], tf["latent"]), F.mse_loss(kd.losses[1].adapter(sf["mid"]), tf["latent"])
        )
    value.backward()
    assert all(p.grad is not None for p in kd.parameters())


def test_feature_kd_spectral_rejects_cutoffs_that_empty_a_band():
    """The feature-KD spectral path checks its cutoffs against the teacher feature's grid when it is built (a 4x4
    latent has radii 0, 0.25, 0.354, ...: nothing in (0.26, 0.3]), and rejects booleans / cutoffs >= sqrt(0.5)."""
    sf, tf = _feature_dicts()
    with pytest.raises(ValueError, match=r"SpectralKD: cutoffs \(0.26, 0.3\) leave band 1 .* on a 4x4 grid"):
        FeatureKD({"mid": "latent"}, sf, tf, loss="spectral", cutoffs=(0.26, 0.3))
    FeatureKD({"enc.0": "enc0"}, sf, tf, loss="spectral", cutoffs=(0.26, 0.3))  # a 16x16 grid has bins there
    with pytest.raises(ValueError, match=r"cutoffs must be >= 0 and < sqrt\(0.5\)"):
        FeatureKD({"mid": "latent"}, sf, tf, loss="spectral", cutoffs=0.8)
    with pytest.raises(TypeError, match=r"cutoffs must be numbers .*\(a bool\)"):
        FeatureKD({"mid": "latent"}, sf, tf, loss="spectral", cutoffs=True)
    from sdkd.losses.feature_kd import build_feature_loss

    taps = {b: (2, 32, 4, 4) for b in ("band0", "band1", "band2")}  # each band from its own branch: same grid rule
    with pytest.raises(ValueError, match=r"cutoffs \(0.26, 0.3\) leave band 1 .* on a 4x4 grid"):
        build_feature_loss("spectral", (2, 8, 8, 8), taps, cutoffs=(0.26, 0.3))


def test_feature_kd_missing_names_are_clear_errors():
    sf, tf = _feature_dicts()
    with pytest.raises(MissingFeatureError, match=r"student feature 'enc1' not found; available: \['enc.0', 'mid'\]"):
        FeatureKD({"enc1": "enc0"}, sf, tf)
    with pytest.raises(ValueError, match=r"teacher feature 'nope' not found; available: \['enc0', 'hi', 'latent'\]"):
        FeatureKD({"mid": "nope"}, sf, tf)
    kd = FeatureKD({"mid": "latent"}, sf, tf, loss="ab")
    with pytest.raises(KeyError, match="teacher feature 'latent' not found"):
        kd(sf, {"hi": tf["hi"]})
    with pytest.raises(ValueError, match="unknown student feature"):
        FeatureKD({"mid": "latent"}, sf, tf, weights={"enc.0": 2.0})
    with pytest.raises(ValueError, match="1 feature pair"):
        FeatureKD({"mid": "latent"}, sf, tf, weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="loss must be one of"):
        FeatureKD({"mid": "latent"}, sf, tf, loss="kl")
    with pytest.raises(ValueError, match="pairs is empty"):
        FeatureKD({}, sf, tf)


class _TinyNet(nn.Module):
    """Follows the sdkd.models convention: ``forward(x, return_features=True) -> (pred, {name: feature})``."""

    def __init__(self, width):
        super().__init__()
        self.conv = nn.Conv2d(2, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.head = nn.Conv2d(width, 2, 1)

    def forward(self, x, return_features=False):
        h = self.bn(self.conv(x.flatten(1, 2)))
        y = self.head(torch.relu(h)).unsqueeze(1)
        return (y, {"pre": h, "down": F.avg_pool2d(h, 2)}) if return_features else y


def test_feature_kd_from_models_sizes_adapters_and_restores_modes():
    student, teacher = _TinyNet(3), _TinyNet(8).eval()
    x = torch.randn(2, 1, 2, 8, 8)
    kd = FeatureKD.from_models(student, teacher, x, {"pre": "down"}, loss="ab")
    assert student.training and not teacher.training
    assert student.bn.num_batches_tracked.item() == 0  # shapes were taken in eval mode
    _, sf = student(x, return_features=True)
    with torch.no_grad():
        _, tf = teacher(x, return_features=True)
    value = kd(sf, tf)
    assert value.dim() == 0 and value.item() > 0
    value.backward()
    assert student.conv.weight.grad is not None


def test_bad_input_errors():
    s, t = torch.randn(2, 4, 8, 8), torch.randn(2, 6, 8, 8)
    loss_fn = FeatureMSE(4, 6)
    with pytest.raises(ValueError, match="student is on cpu but teacher is on meta"):
        loss_fn(s, t.to("meta"))
    with pytest.raises(ValueError, match=r"adapted student feature \(3, 6, 8, 8\).*teacher feature \(2, 6, 8, 8\)"):
        loss_fn(torch.randn(3, 4, 8, 8), t)
    with pytest.raises(ValueError, match="has 5 \\(folded\\) channels, expected 4"):
        loss_fn(torch.randn(2, 5, 8, 8), t)
    with pytest.raises(ValueError, match="both be 4-D"):
        loss_fn(s, t[:, None])
    with pytest.raises(ValueError, match="student tensor contains NaN"):
        loss_fn(s.clone().fill_(float("nan")), t)
    with pytest.raises(ValueError, match="teacher tensor contains NaN"):
        ABLoss(4, 6)(s, t.clone().fill_(float("nan")))
    with pytest.raises(TypeError, match="teacher must be a torch.Tensor"):
        loss_fn(s, t.numpy())
    with pytest.raises(ValueError, match="adapter parameters are on meta"):
        FeatureMSE(4, 6).to("meta")(s, t)
    with pytest.raises(ValueError, match="time_fold='batch' needs equal frame counts"):
        FeatureAdapter(4, 6, student_frames=2, teacher_frames=3)
    with pytest.raises(ValueError, match="project=False but the widths differ"):
        FeatureAdapter(4, 6, project=False)
    with pytest.raises(ValueError, match="time_fold must be one of"):
        FeatureAdapter(4, 6, time_fold="time")
    with pytest.raises(ValueError, match="different ranks"):
        FeatureMSE.from_shapes((2, 4, 8, 8), (2, 1, 4, 8, 8))
    with pytest.raises(ValueError, match="needs student_channels and teacher_channels"):
        FeatureMSE()
    with pytest.raises(ValueError, match="reduction must be one of"):
        ABLoss(4, 6, reduction="batch")
    with pytest.raises(ValueError, match="margin must be"):
        ABLoss(4, 6, margin=0.0)
