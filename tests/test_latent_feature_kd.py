"""Latent feature distillation: AttentionTransfer, per-band branch taps (BranchSpectralKD), the FEATURE_LOSSES
registry in FeatureKD / the Distiller / configs, and Figure 2's latent-spectrum panel."""

import math

import pytest
import torch
import torch.nn.functional as F

from sdkd.distill import Distiller, IndexedDataset, TeacherCache
from sdkd.losses import (
    FEATURE_LOSSES,
    AttentionTransfer,
    BranchSpectralKD,
    FeatureKD,
    SpectralKD,
    assemble_bands,
    attention_map,
    build_feature_loss,
)
from sdkd.models import build_model
from sdkd.ops.spectral_loss import band_energies_reference
from sdkd.train import ConfigError
from sdkd.train.run import check_feature_loss

TAPS = {"low": "block0.low", "high": "block0.high"}


# ----------------------------------------------------------------------------- attention transfer
def test_at_hand_computed_value():
    # student maps: mean_c A^2 = [(1+1)/2, (4+0)/2] = [1, 2] -> [1, 2]/sqrt5; teacher: [9, 0] -> [1, 0]
    s = torch.tensor([[[[1.0, 2.0]], [[1.0, 0.0]]]], dtype=torch.float64)
    t = torch.tensor([[[[3.0, 0.0]]]], dtype=torch.float64)
    want = (1 / math.sqrt(5) - 1) ** 2 + (2 / math.sqrt(5)) ** 2  # = 2 - 2/sqrt5
    assert want == pytest.approx(2 - 2 / math.sqrt(5))
    assert AttentionTransfer()(s, t).item() == pytest.approx(want)
    assert AttentionTransfer(reduction="mean")(s, t).item() == pytest.approx(want / 2)  # over 2 positions
    # a second sample whose maps agree adds 0: the batch mean halves
    s2, t2 = torch.cat([s, s]), torch.cat([t, torch.tensor([[[[1.0, 2.0**0.5]]]], dtype=torch.float64)])
    assert AttentionTransfer()(s2, t2).item() == pytest.approx(want / 2)
    torch.testing.assert_close(AttentionTransfer().per_sample(s2, t2), torch.tensor([want, 0.0], dtype=torch.float64))


@pytest.mark.parametrize(
    "s_shape, t_shape, resize",
    [
        ((2, 3, 8, 8), (2, 5, 4, 4), "pool"),
        ((2, 3, 4, 6), (2, 5, 8, 9), "bilinear"),
        ((2, 3, 4, 4), (2, 7, 4, 4), None),
    ],
)
def test_at_adapts_size_on_the_power_map_and_ignores_channels(s_shape, t_shape, resize):
    s, t = torch.randn(s_shape, dtype=torch.float64), torch.randn(t_shape, dtype=torch.float64)
    power = s.square().mean(1, keepdim=True)
    if resize == "pool":
        power = F.adaptive_avg_pool2d(power, t_shape[-2:])
    elif resize == "bilinear":
        power = F.interpolate(power, size=t_shape[-2:], mode="bilinear", align_corners=False)
    qs = power.flatten(1) / power.flatten(1).norm(dim=1, keepdim=True)
    qt = t.square().mean(1).flatten(1)
    qt = qt / qt.norm(dim=1, keepdim=True)
    want = (qs - qt).square().sum(1).mean()
    at = AttentionTransfer.from_shapes(s_shape, t_shape)
    torch.testing.assert_close(at(s, t), want)
    torch.testing.assert_close(attention_map(t), qt)
    assert at(3.0 * s, t).item() == pytest.approx(want.item())  # normalised maps: scale-free
    assert at(t, t).item() == pytest.approx(0.0, abs=1e-12)


def test_at_gradients_reach_the_student_only():
    s = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 3, 2, 2, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: AttentionTransfer()(a, t), (s,))
    AttentionTransfer()(s, t).backward()
    assert s.grad.abs().sum() > 0


def test_at_5d_features_compare_frame_by_frame():
    s, t = torch.randn(2, 3, 4, 8, 8), torch.randn(2, 3, 6, 4, 4)
    at = AttentionTransfer()
    want = torch.stack([at(s[:, i], t[:, i]) for i in range(3)]).mean()
    torch.testing.assert_close(at(s, t), want)
    with pytest.raises(ValueError, match="frames"):
        at(s, torch.randn(2, 4, 6, 4, 4))
    with pytest.raises(ValueError, match="4-D"):
        at(s, t[:, 0])
    with pytest.raises(ValueError, match="reduction"):
        AttentionTransfer(reduction="sum")


def test_feature_kd_takes_every_registered_loss():
    s = {"enc": torch.randn(3, 4, 8, 8)}
    t = {"block0": torch.randn(3, 6, 4, 4)}
    assert set(FEATURE_LOSSES) == {"mse", "ab", "spectral", "at"}
    for name in FEATURE_LOSSES:
        kd = FeatureKD({"enc": "block0"}, s, t, loss=name)
        value = kd(s, t)
        assert value.dim() == 0 and torch.isfinite(value), name
    kd = FeatureKD({"enc": "block0"}, s, t, loss="at", p=4.0)
    assert kd.losses[0].p == 4.0
    with pytest.raises(ValueError, match="one of"):
        FeatureKD({"enc": "block0"}, s, t, loss="cosine")
    with pytest.raises(ValueError, match="no adapter"):
        FeatureKD({"enc": "block0"}, s, t, loss="at", adapter_kwargs={"bn": False})


# ----------------------------------------------------------------------------- per-band branch taps
def test_assembled_target_takes_each_band_from_its_tap():
    torch.manual_seed(0)
    s, lo, hi = (torch.randn(2, 3, 8, 10, dtype=torch.float64) for _ in range(3))
    t = assemble_bands([lo, hi], (0.25,))
    torch.testing.assert_close(assemble_bands([s, s], (0.25,)), s)  # the bands sum to the identity
    e_lo = band_energies_reference(s - lo, (0.25,), "mean")[0]
    e_hi = band_energies_reference(s - hi, (0.25,), "mean")[1]
    kd = SpectralKD(cutoffs=0.25, alpha=2.0)
    torch.testing.assert_close(kd(s, t), 2.0 * e_lo + e_hi)
    loss = BranchSpectralKD.from_shapes(s.shape, {"low": lo.shape, "high": hi.shape}, alpha=2.0).double()
    assert isinstance(loss.adapter.proj, torch.nn.Identity)  # equal shapes: no projection
    torch.testing.assert_close(loss(s, {"low": lo, "high": hi}), 2.0 * e_lo + e_hi)
    torch.testing.assert_close(loss.per_sample(s, {"low": lo, "high": hi}).mean(), 2.0 * e_lo + e_hi)


def test_branch_taps_are_checked():
    with pytest.raises(ValueError, match="one teacher tap per band"):
        BranchSpectralKD.from_shapes((2, 3, 8, 8), {"low": (2, 3, 8, 8)})
    with pytest.raises(ValueError, match="one shape"):
        BranchSpectralKD.from_shapes((2, 3, 8, 8), {"low": (2, 3, 8, 8), "high": (2, 4, 8, 8)})
    with pytest.raises(ValueError, match="need loss='spectral'"):
        build_feature_loss("mse", (2, 3, 8, 8), {"low": (2, 3, 8, 8), "high": (2, 3, 8, 8)})
    three = BranchSpectralKD.from_shapes((2, 3, 8, 8), {f"band{i}": (2, 3, 8, 8) for i in range(3)}, cutoffs=(0.1, 0.3))
    assert three.bands == ("band0", "band1", "band2")


def _tiny_pair():
    torch.manual_seed(0)
    student = build_model("resnet", (4, 1, 8, 8), 4, widths=[4, 6], depths=[1, 1], strides=[1, 1])
    t1 = build_model("st_alternet", (4, 1, 8, 8), 4, hid_S=4, hid_T=8, N_S=2, N_T=1, num_heads=2).eval()
    t2 = build_model("simvp", (4, 1, 8, 8), 4, hid_S=4, hid_T=8, N_S=2, N_T=1).eval()
    return student, t1, t2


def _losses(student, teachers, pairs, kind, x, **options):
    _, sf = student(x, return_features=True)
    table = []
    for teacher, row in zip(teachers, pairs):
        _, tf = teacher(x, return_features=True)
        shapes = {
            s: {b: tf[n].shape for b, n in tap.items()} if isinstance(tap, dict) else tf[tap].shape
            for s, tap in row.items()
        }
        table.append({s: build_feature_loss(kind, sf[s].shape, shape, **options) for s, shape in shapes.items()})
    return table


@pytest.mark.parametrize("strategy", ["single", "aver", "a2d", "camkd"])
def test_distiller_latent_spectral_with_branch_taps(strategy):
    student, t1, t2 = _tiny_pair()
    x, y = torch.randn(4, 4, 1, 8, 8), torch.randn(4, 4, 1, 8, 8)
    teachers = [t1] if strategy == "single" else [t1, t2]
    pairs = [{"enc": TAPS}, {"enc": "block0"}][: len(teachers)]
    _, sf = student(x, return_features=True)
    _, tf = t1(x, return_features=True)
    assert sf["enc"].shape != tf["block0.low"].shape  # the adapter maps widths and sizes
    table = _losses(student, teachers, pairs, "spectral", x, alpha=2.0)
    d = Distiller(
        student,
        teachers,
        strategy=strategy,
        kd_loss=torch.nn.MSELoss(),
        features=pairs,
        feature_loss=table,
        feature_lam=1.0,
        lam=1.0,
    )
    out = d(x, y)
    out.loss.backward()
    assert all(out.terms[f"feat/{m}"] > 0 for m in range(len(teachers)))
    adapter = table[0]["enc"].adapter
    assert adapter.proj[0].weight.grad is not None and adapter.proj[0].weight.grad.abs().sum() > 0
    if strategy == "single":  # the feature term is the branch loss on this batch's features
        with torch.no_grad():
            want = table[0]["enc"](
                student(x, return_features=True)[1]["enc"],
                {b: t1(x, return_features=True)[1][n] for b, n in TAPS.items()},
            )
        assert out.terms["feat/0"].item() == pytest.approx(want.item(), rel=1e-5)


def test_camkd_with_adapted_features_of_other_shapes():
    # CA-MKD asks every feature loss per sample; adapted losses compare tensors of different shapes
    student, t1, t2 = _tiny_pair()
    x, y = torch.randn(3, 4, 1, 8, 8), torch.randn(3, 4, 1, 8, 8)
    for kind in ("mse", "at", "spectral"):
        pairs = [{"enc": "block0"}, {"enc": "block0"}]
        table = _losses(student, [t1, t2], pairs, kind, x)
        for row in table:
            row["enc"].eval()  # BatchNorm on running stats: per-sample evaluation is then exact
        d = Distiller(student, [t1, t2], strategy="camkd", features=pairs, feature_loss=table, feature_lam=1.0)
        out = d(x, y)
        _, sf = student(x, return_features=True)
        _, tf = t2(x, return_features=True)
        torch.testing.assert_close(
            table[1]["enc"].per_sample(sf["enc"], tf["block0"]).mean(),
            table[1]["enc"](sf["enc"], tf["block0"]),
            rtol=1e-5,
            atol=1e-7,
        )
        assert torch.isfinite(out.loss) and out.terms["feat/1"] > 0, kind


def test_cached_and_live_branch_taps_agree():
    student, t1, _ = _tiny_pair()
    xs, ys = torch.randn(6, 4, 1, 8, 8), torch.randn(6, 4, 1, 8, 8)
    data = list(zip(xs, ys))
    pairs = {"enc": TAPS}
    table = _losses(student, [t1], [pairs], "spectral", xs[:2])
    cache = TeacherCache.build([t1], data, features=[sorted(TAPS.values())])
    live = Distiller(student, [t1], features=pairs, feature_loss=table, feature_lam=1.0).eval()
    cached = Distiller(student, None, features=pairs, feature_loss=table, feature_lam=1.0, cache=cache).eval()
    idx = torch.tensor([1, 4])
    _, x, _ = IndexedDataset(data)[1]
    a = live(xs[idx], ys[idx])
    b = cached(xs[idx], ys[idx], index=idx)
    assert a.terms["feat/0"].item() == pytest.approx(b.terms["feat/0"].item(), rel=1e-5)
    with pytest.raises(KeyError, match="block0.high"):
        Distiller(
            student,
            None,
            features={"enc": TAPS},
            feature_lam=1.0,
            cache=TeacherCache.build([t1], data, features=[["block0.low"]]),
        )


def test_feature_kd_from_models_with_branch_taps():
    student, t1, _ = _tiny_pair()
    x = torch.randn(2, 4, 1, 8, 8)
    kd = FeatureKD.from_models(student, t1, x, {"enc": TAPS}, loss="spectral", alpha=2.0)
    assert isinstance(kd.losses[0], BranchSpectralKD) and kd.losses[0].criterion.weights == (2.0, 1.0)
    _, sf = student(x, return_features=True)
    with torch.no_grad():
        _, tf = t1(x, return_features=True)
    parts = kd.components(sf, tf)
    assert list(parts) == ["enc->low:block0.low+high:block0.high"]
    torch.testing.assert_close(kd(sf, tf).detach(), parts["enc->low:block0.low+high:block0.high"])


# ----------------------------------------------------------------------------- configs
def test_config_feature_loss_and_options_are_checked_up_front():
    base = {"feature_loss": "spectral", "feature_cfg": {"alpha": 2.0, "cutoffs": 0.2}}
    check_feature_loss(base)
    check_feature_loss({"feature_loss": "at", "feature_cfg": {"p": 2}})
    with pytest.raises(ConfigError, match="mse, ab, spectral, at"):
        check_feature_loss({"feature_loss": "cosine", "feature_cfg": {}})
    with pytest.raises(ConfigError, match="feature_cfg.*alhpa"):
        check_feature_loss({"feature_loss": "spectral", "feature_cfg": {"alhpa": 2.0}})
    with pytest.raises(ConfigError, match="feature_cfg.*reduction"):
        check_feature_loss({"feature_loss": "at", "feature_cfg": {"reduction": "sum"}})


# ----------------------------------------------------------------------------- figure 2
def _power_law_field(slope: float, n: int = 64, maps: int = 8) -> torch.Tensor:
    """Random-phase fields whose shell-summed spectrum goes as k^slope (2-D: |X|^2 ~ k^(slope - 1))."""
    g = torch.Generator().manual_seed(0)
    k = torch.fft.fftfreq(n, d=1.0 / n)
    kk = torch.sqrt(k[:, None] ** 2 + k[None, :] ** 2).clamp_min(1.0)
    amp = kk ** ((slope - 1) / 2)
    phase = torch.exp(2j * math.pi * torch.rand(maps, n, n, generator=g))
    return torch.fft.ifft2(amp * phase).real.reshape(2, maps // 2, n, n)


def test_figure2_fits_the_latent_slope_and_writes_the_png(tmp_path):
    pytest.importorskip("matplotlib")
    from sdkd.train.figures import KOLMOGOROV_SLOPE, latent_spectrum, write_spectral_claims

    latent = _power_law_field(KOLMOGOROV_SLOPE)
    k, E, slope = latent_spectrum(latent)
    assert k[0] == 1 and slope == pytest.approx(KOLMOGOROV_SLOPE, abs=0.15)
    assert latent_spectrum(_power_law_field(-3.0))[2] == pytest.approx(-3.0, abs=0.2)
    path, fitted = write_spectral_claims(latent, {"T1": (0.1, 0.01), "S": (0.3, 0.05)}, tmp_path / "fig2.png")
    assert fitted == slope and path.stat().st_size > 10_000
