"""SpectralKD (DESIGN.md section 5) against MSE, Parseval and independent numpy/torch formulas."""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sdkd.losses import SpectralKD
from sdkd.ops.spectral_loss import spectral_loss

SHAPES = [(1, 1, 7, 9), (3, 5, 31, 64), (2, 3, 15, 17), (2, 8, 6), (5, 4)]


def _band_of(iy, ix, H, W, cutoffs):
    """Band of the bin with signed indices (iy, ix), decided in exact rational arithmetic (low: r <= c)."""
    r2 = Fraction(iy, H) ** 2 + Fraction(ix, W) ** 2
    return sum(r2 > Fraction(str(c)) ** 2 for c in cutoffs)


def _signed(i, n):
    return i if i < (n + 1) // 2 else i - n


def full_plane_bands(H, W, cutoffs):
    """Band of every bin of the full fft2 grid (both axes signed), ``(H, W)`` int array."""
    return np.array([[_band_of(_signed(a, H), _signed(b, W), H, W, cutoffs) for b in range(W)] for a in range(H)])


def np_band_energies_mean(x, cutoffs):
    """Independent: full-plane |fft2|^2 (no Hermitian weights), each band's sum / numel."""
    H, W = x.shape[-2:]
    p = (np.abs(np.fft.fft2(x, norm="ortho")) ** 2).reshape(-1, H, W).sum(0)
    band = full_plane_bands(H, W, cutoffs)
    return np.array([p[band == b].sum() for b in range(len(cutoffs) + 1)]) / x.size


def np_band_energies_band_mean(x, cutoffs):
    """Independent: loop over the rfft2 half-plane bins, unweighted mean |D|^2 per band."""
    H, W = x.shape[-2:]
    X = np.fft.rfft2(x, norm="ortho").reshape(-1, H, W // 2 + 1)
    sums, counts = np.zeros(len(cutoffs) + 1), np.zeros(len(cutoffs) + 1)
    for iy in range(H):
        for ix in range(W // 2 + 1):
            b = _band_of(_signed(iy, H), ix, H, W, cutoffs)
            sums[b] += (np.abs(X[:, iy, ix]) ** 2).sum()
            counts[b] += X.shape[0]
    return np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)


def np_loss(s, t, cutoffs, weights, reduction="mean", adaptive=False, eps=1e-6):
    energies = np_band_energies_mean if reduction == "mean" else np_band_energies_band_mean
    err = energies(s - t, cutoffs)
    if adaptive:
        err = err / (energies(t, cutoffs) + eps)
    return err * np.asarray(weights)


def _pair(shape, dtype=torch.float32):
    return torch.randn(shape, dtype=dtype), torch.randn(shape, dtype=dtype)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_alpha_one_equals_mse(shape, dtype, backend):
    s, t = _pair(shape, dtype)
    loss = SpectralKD(backend=backend)(s, t)
    ref = F.mse_loss(s, t)
    assert loss.dtype == dtype and loss.dim() == 0
    rtol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(loss, ref, rtol=rtol, atol=0)


@pytest.mark.parametrize("shape", [(1, 1, 7, 9), (3, 5, 31, 64), (2, 16, 16)])
def test_parseval_split_and_alpha_weights_low_band(shape):
    s, t = _pair(shape, torch.float64)
    kd = SpectralKD(cutoffs=0.25)
    comp = kd.components(s, t)
    assert set(comp) == {"low", "high"} and not comp["low"].requires_grad
    assert comp["low"] > 0 and comp["high"] > 0
    torch.testing.assert_close(comp["low"] + comp["high"], F.mse_loss(s, t), rtol=1e-12, atol=0)
    expected = np_band_energies_mean((s - t).numpy(), (0.25,))
    np.testing.assert_allclose([comp["low"].item(), comp["high"].item()], expected, rtol=1e-10)
    # alpha scales the low band only
    loss3 = SpectralKD(alpha=3.0)(s, t)
    torch.testing.assert_close(loss3, 3 * comp["low"] + comp["high"], rtol=1e-12, atol=0)


@pytest.mark.parametrize("shape", [(2, 3, 7, 9), (1, 2, 8, 16), (12, 16)])
@pytest.mark.parametrize("weights", [(1.0, 1.0), (0.5, 2.0)])
def test_band_mean_against_numpy(shape, weights):
    s, t = _pair(shape, torch.float64)
    kd = SpectralKD(weights=weights, reduction="band_mean")
    expected = np_loss(s.numpy(), t.numpy(), (0.25,), weights, reduction="band_mean")
    np.testing.assert_allclose(kd(s, t).item(), expected.sum(), rtol=1e-10)
    comp = kd.components(s, t)
    np.testing.assert_allclose([comp["low"].item(), comp["high"].item()], expected, rtol=1e-10)


@pytest.mark.parametrize("reduction", ["mean", "band_mean"])
def test_adaptive_against_independent(reduction):
    t = torch.randn(2, 3, 12, 10, dtype=torch.float64)
    s = t + 0.1 * torch.randn_like(t)
    kd = SpectralKD(cutoffs=(0.1, 0.3), weights=(1.0, 2.0, 0.5), reduction=reduction, weighting="adaptive", eps=1e-4)
    expected = np_loss(s.numpy(), t.numpy(), (0.1, 0.3), (1.0, 2.0, 0.5), reduction, adaptive=True, eps=1e-4)
    np.testing.assert_allclose(kd(s, t).item(), expected.sum(), rtol=1e-10)
    # relative errors: with a negligible eps, scaling both inputs leaves the adaptive loss unchanged
    kd.eps = 1e-14
    np.testing.assert_allclose(kd(10 * s, 10 * t).item(), kd(s, t).item(), rtol=1e-9)


@pytest.mark.parametrize("H, W, cutoffs", [(12, 10, (0.1, 0.3)), (20, 20, (0.25,)), (30, 15, (0.2, 0.4))])
def test_bins_on_a_cutoff_are_low(H, W, cutoffs):
    """Ties such as r = 3/10 = c or (3/20, 4/20) on c = 1/4 belong to the lower band (r <= c)."""
    from sdkd.ops.spectral_loss import band_index

    expected = full_plane_bands(H, W, cutoffs)[:, : W // 2 + 1]
    on_cutoff = [
        (a, b)
        for a in range(H)
        for b in range(W // 2 + 1)
        if any(Fraction(_signed(a, H), H) ** 2 + Fraction(b, W) ** 2 == Fraction(str(c)) ** 2 for c in cutoffs)
    ]
    assert on_cutoff, "the case must contain bins lying exactly on a cutoff"
    np.testing.assert_array_equal(band_index(H, W, cutoffs).numpy(), expected)


def test_adaptive_gradient_treats_teacher_energy_as_constant():
    t = torch.randn(1, 2, 8, 8, dtype=torch.float64, requires_grad=True)
    s = torch.randn(1, 2, 8, 8, dtype=torch.float64, requires_grad=True)
    SpectralKD(weighting="adaptive")(s, t).backward()
    # the teacher enters through (s - t) and a detached normaliser, so its gradient is minus the student's
    torch.testing.assert_close(t.grad, -s.grad)


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_multi_band_against_numpy_and_components(backend):
    s, t = _pair((2, 3, 16, 20), torch.float64)
    cutoffs, weights = (0.1, 0.25, 0.4), (1.0, 2.0, 3.0, 0.5)
    kd = SpectralKD(cutoffs=cutoffs, weights=weights, backend=backend)
    comp = kd.components(s, t)
    assert list(comp) == ["band0", "band1", "band2", "band3"]
    expected = np_loss(s.numpy(), t.numpy(), cutoffs, weights)
    np.testing.assert_allclose([v.item() for v in comp.values()], expected, rtol=1e-10)
    torch.testing.assert_close(kd(s, t), sum(comp.values()), rtol=1e-12, atol=0)
    # unit weights: still an exact split of the MSE
    torch.testing.assert_close(SpectralKD(cutoffs=cutoffs)(s, t), F.mse_loss(s, t), rtol=1e-12, atol=0)


def _torch_full_plane_loss(s, t, cutoffs, weights):
    """Independent differentiable formula: full fft2, masks on the full grid, no Hermitian weights."""
    H, W = s.shape[-2:]
    band = torch.from_numpy(full_plane_bands(H, W, cutoffs))
    p = torch.fft.fft2(s - t, norm="ortho").abs().square()
    return sum(w * p[..., band == b].sum() for b, w in enumerate(weights)) / s.numel()


@pytest.mark.parametrize("shape", [(2, 3, 9, 11), (1, 1, 8, 16)])
def test_gradient_matches_independent_formula(shape):
    s0, t = _pair(shape, torch.float64)
    cutoffs, weights = (0.15, 0.3), (2.0, 0.5, 1.5)
    s = s0.clone().requires_grad_(True)
    SpectralKD(cutoffs=cutoffs, weights=weights)(s, t).backward()
    s_ref = s0.clone().requires_grad_(True)
    ref = _torch_full_plane_loss(s_ref, t, cutoffs, weights)
    ref.backward()
    torch.testing.assert_close(SpectralKD(cutoffs=cutoffs, weights=weights)(s0, t), ref, rtol=1e-12, atol=0)
    torch.testing.assert_close(s.grad, s_ref.grad, rtol=1e-10, atol=1e-14)
    # alpha = 1: the gradient of the MSE, 2 (s - t) / numel
    s.grad = None
    SpectralKD()(s, t).backward()
    torch.testing.assert_close(s.grad, 2 * (s0 - t) / s0.numel(), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize(
    "kwargs", [{"reduction": "band_mean"}, {"weighting": "adaptive", "alpha": 2.0}, {"cutoffs": (0.2, 0.35)}]
)
def test_gradcheck_fp64(kwargs):
    s = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    t = torch.randn(1, 2, 5, 6, dtype=torch.float64)
    kd = SpectralKD(**kwargs)
    assert torch.autograd.gradcheck(lambda x: kd(x, t), (s,), fast_mode=True)


def test_cutoff_zero_keeps_only_dc_in_low_band():
    s, t = _pair((2, 3, 7, 10), torch.float64)
    comp = SpectralKD(cutoffs=0.0).components(s, t)
    d = s - t
    dc = (d.sum(dim=(-2, -1)) ** 2 / (7 * 10)).sum() / d.numel()  # |D[0, 0]|^2 = (sum d)^2 / (H W) per slice
    torch.testing.assert_close(comp["low"], dc, rtol=1e-12, atol=0)
    torch.testing.assert_close(comp["high"], F.mse_loss(s, t) - dc, rtol=1e-10, atol=0)


@pytest.mark.parametrize("cutoffs", [0.71, 0.8, 1.0, math.sqrt(0.5), (0.2, 0.75), float("inf"), -0.1])
def test_cutoff_outside_every_grid_is_rejected_at_construction(cutoffs):
    """A cutoff >= sqrt(0.5) (the largest radius of any grid) leaves the high band empty on every grid: the
    loss would silently be alpha * MSE. Rejected when the loss is built, and by the op itself."""
    with pytest.raises(ValueError, match=r"SpectralKD: cutoffs must be >= 0 and < sqrt\(0.5\)"):
        SpectralKD(cutoffs=cutoffs)
    s, t = _pair((2, 8, 8), torch.float64)
    with pytest.raises(ValueError, match=r"spectral_loss: cutoffs must be >= 0 and < sqrt\(0.5\)"):
        spectral_loss(s, t, cutoffs=cutoffs)


@pytest.mark.parametrize("cutoffs", [True, False, (0.1, True), np.bool_(True), "0.25", None])
def test_cutoffs_must_be_numbers_not_booleans(cutoffs):
    """``cutoffs=True`` was read as 1.0 (every bin low: alpha * MSE); strings and None are no cutoffs either."""
    with pytest.raises(TypeError, match="SpectralKD: cutoffs must be"):
        SpectralKD(cutoffs=cutoffs)
    s, t = _pair((2, 8, 8), torch.float64)
    with pytest.raises(TypeError, match="spectral_loss: cutoffs must be"):
        spectral_loss(s, t, cutoffs=cutoffs)


@pytest.mark.parametrize("cutoffs", [(0.3, 0.2), (0.25, 0.25)])
def test_cutoffs_must_increase(cutoffs):
    with pytest.raises(ValueError, match="strictly increasing"):
        SpectralKD(cutoffs=cutoffs)


@pytest.mark.parametrize(
    "shape,cutoffs,band",
    [
        ((2, 7, 9), 0.65, 1),  # odd sizes: the largest radius is sqrt((3/7)^2 + (4/9)^2) = 0.617
        ((1, 1, 1, 8), 0.5, 1),  # one row: radii 0, 1/8, ..., 1/2
        ((2, 4, 4), (0.26, 0.3), 1),  # radii 0, 0.25, 0.354, 0.5, 0.559, 0.707: nothing in (0.26, 0.3]
        ((2, 4, 4), (0.1, 0.2, 0.3), 1),
    ],
)
def test_cutoffs_leaving_a_band_empty_on_the_grid_are_rejected(shape, cutoffs, band):
    """Valid numbers that still leave a band without any bin of this H x W grid: the op, the module (at the first
    call, or up front with check_grid) and the components all refuse, naming the band and the grid."""
    s, t = _pair(shape, torch.float64)
    H, W = shape[-2:]
    kd = SpectralKD(cutoffs=cutoffs)  # the grid is not known yet
    msg = rf"leave band {band} \(.*\) without any frequency bin on a {H}x{W} grid"
    with pytest.raises(ValueError, match="SpectralKD: cutoffs .* " + msg):
        kd.check_grid(H, W)
    for call in (lambda: kd(s, t), lambda: kd.components(s, t), lambda: spectral_loss(s, t, cutoffs=cutoffs)):
        with pytest.raises(ValueError, match="spectral_loss: cutoffs .* " + msg):
            call()
    SpectralKD(cutoffs=cutoffs).check_grid(64, 64)  # the same cutoffs are fine on a finer grid


def test_band_check_agrees_with_band_index():
    """The pure-Python band count behind the check is band_index's rule, bins on a cutoff included."""
    from sdkd.ops.spectral_cutoffs import band_bin_totals
    from sdkd.ops.spectral_loss import band_bin_counts

    for H, W in [(1, 8), (4, 4), (7, 9), (8, 5), (16, 20), (31, 64), (32, 480)]:
        radii = sorted({math.hypot(a / H, b / W) for a in range(H // 2 + 1) for b in range(W // 2 + 1)})
        for cuts in [(radii[1],), (radii[1], radii[2]), (0.1, 0.25, 0.4), (radii[-2],), (0.0, 0.3)]:
            cuts = tuple(c for c in cuts if c < math.sqrt(0.5))
            assert band_bin_totals(H, W, cuts) == tuple(band_bin_counts(H, W, cuts).tolist()), (H, W, cuts)


def test_smooth_error_is_low_frequency_and_checkerboard_is_high():
    H, W = 32, 48
    y = torch.arange(H, dtype=torch.float64)[:, None]
    x = torch.arange(W, dtype=torch.float64)[None, :]
    smooth = torch.sin(2 * math.pi * 2 * x / W) * torch.cos(2 * math.pi * 3 * y / H) + 0.3
    t = torch.randn(2, 1, H, W, dtype=torch.float64)
    comp = SpectralKD().components(t + smooth, t)
    torch.testing.assert_close(comp["low"], F.mse_loss(t + smooth, t), rtol=1e-12, atol=0)
    assert comp["high"].item() < 1e-20
    checker = (-1.0) ** (x + y)
    comp = SpectralKD().components(t + checker, t)
    assert comp["low"].item() < 1e-20
    torch.testing.assert_close(comp["high"], torch.tensor(1.0, dtype=torch.float64), rtol=1e-12, atol=0)


def test_features_4d_backend_and_repr():
    s, t = _pair((2, 6, 10, 12))
    kd = SpectralKD(alpha=0.5, backend="reference")
    comp = kd.components(s, t)
    torch.testing.assert_close(kd(s, t), comp["low"] + comp["high"], rtol=1e-5, atol=0)
    assert "cutoffs=0.25" in repr(kd) and "weights=(0.5, 1.0)" in repr(kd) and "'reference'" in repr(kd)
    with pytest.raises(ValueError, match="backend"):
        SpectralKD(backend="no-such-backend")(s, t)


def test_mixed_dtypes_are_promoted():
    s, t = _pair((1, 2, 8, 8), torch.float64)
    loss = SpectralKD()(s.float(), t)
    assert loss.dtype == torch.float64
    torch.testing.assert_close(loss, F.mse_loss(s.float().double(), t), rtol=1e-12, atol=0)


def test_bad_input_errors():
    kd = SpectralKD()
    s, t = _pair((2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"student shape \(2, 3, 8, 8\).*teacher shape \(2, 3, 8, 9\)"):
        kd(s, torch.randn(2, 3, 8, 9))
    with pytest.raises(ValueError, match="student is on cpu but teacher is on meta"):
        kd(s, torch.empty(2, 3, 8, 8, device="meta"))
    with pytest.raises(ValueError, match="student tensor contains NaN"):
        kd(s.clone().index_fill_(0, torch.tensor([1]), float("nan")), t)
    with pytest.raises(ValueError, match="teacher tensor contains NaN"):
        kd(s, t.clone().fill_(float("inf")))
    with pytest.raises(ValueError, match="teacher tensor contains NaN"):
        kd.components(s, t.clone().fill_(float("nan")))
    with pytest.raises(TypeError, match="teacher must be a torch.Tensor"):
        kd(s, t.numpy())
    with pytest.raises(TypeError, match="floating point"):
        kd(s.long(), t.long())
    with pytest.raises(ValueError, match="at least 2 dims"):
        kd(torch.randn(5), torch.randn(5))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"alpha": 2.0, "weights": (1.0, 1.0)}, "either alpha"),
        ({"weights": (1.0, 1.0, 1.0)}, "make 2 bands, got 3 weights"),
        ({"weights": (1.0, float("nan"))}, "weights must be finite"),
        ({"cutoffs": (0.3, 0.2)}, "strictly increasing"),
        ({"cutoffs": -0.1}, "cutoffs must be >= 0 and < sqrt"),
        ({"cutoffs": ()}, "at least one"),
        ({"reduction": "sum"}, "reduction must be one of"),
        ({"weighting": "dynamic"}, "weighting must be one of"),
        ({"alpha": float("inf")}, "alpha must be finite"),
        ({"weighting": "adaptive", "eps": 0.0}, "eps must be"),
    ],
)
def test_bad_configuration_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SpectralKD(**kwargs)
