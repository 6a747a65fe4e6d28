"""sdkd.metrics: known values, scikit-image SSIM parity, band split, spectrum slope."""

import math

import numpy as np
import pytest
import torch

from sdkd import metrics as M
from sdkd.ops.spectral_loss import band_energies_reference


def test_mse_mae_match_definitions():
    p, t = torch.randn(2, 3, 1, 8, 9), torch.randn(2, 3, 1, 8, 9)
    assert torch.allclose(M.mse(p, t), torch.nn.functional.mse_loss(p, t))
    assert torch.allclose(M.mae(p, t), (p - t).abs().mean())
    assert M.mse(t, t) == 0 and M.mae(t, t) == 0
    # numpy inputs are accepted
    assert torch.allclose(M.mse(p.numpy(), t.numpy()), M.mse(p, t))


def test_openstl_convention_sums_each_frame_over_channels_and_pixels():
    # OpenSTL (spatial_norm=False): mean over samples and frames of the sum over (C, H, W)
    p, t = torch.zeros(2, 3, 2, 4, 5), torch.zeros(2, 3, 2, 4, 5)
    p[0, 0, 1, 2, 3] = 2.0  # one wrong pixel: squared error 4 in one of the 2 * 3 frames
    p[1, 2, 0, 0, 0] = -1.0  # another, squared error 1
    assert M.mse(p, t, convention="openstl").item() == pytest.approx((4.0 + 1.0) / 6)
    assert M.mae(p, t, convention="openstl").item() == pytest.approx((2.0 + 1.0) / 6)
    assert M.mse(p, t).item() == pytest.approx(5.0 / p.numel())
    q, r = torch.randn(3, 4, 2, 8, 9), torch.randn(3, 4, 2, 8, 9)
    torch.testing.assert_close(M.mse(q, r, convention="openstl"), M.mse(q, r) * (2 * 8 * 9))
    with pytest.raises(ValueError, match="convention must be one of"):
        M.mse(q, r, convention="sum")
    with pytest.raises(ValueError, match=r"needs \(\.\.\., C, H, W\)"):
        M.mae(torch.zeros(4, 5), torch.zeros(4, 5), convention="openstl")


def test_psnr_constant_offset_known_value():
    t = torch.rand(2, 4, 16, 16)
    c, R = 0.05, 2.0
    expected = 10 * math.log10(R**2 / c**2)
    assert M.psnr(t + c, t, data_range=R).item() == pytest.approx(expected, rel=1e-5)
    # default range is the target's range; per-map values with reduction="none"
    per_map = M.psnr(t + c, t, reduction="none")
    assert per_map.shape == (2, 4)
    rng = float(t.max() - t.min())
    assert torch.allclose(per_map, torch.full((2, 4), 10 * math.log10(rng**2 / c**2)), rtol=1e-4)


def test_psnr_is_mean_of_per_frame_values():
    p, t = torch.rand(3, 2, 10, 12), torch.rand(3, 2, 10, 12)
    frame_mse = (p - t).square().mean(dim=(-2, -1))
    expected = (10 * torch.log10(1.0 / frame_mse)).mean()
    assert torch.allclose(M.psnr(p, t, data_range=1.0), expected)
    assert math.isinf(M.psnr(t, t, data_range=1.0).item())


def test_ssim_identical_is_one_and_decreases_with_noise():
    t = torch.rand(2, 1, 32, 32)
    assert M.ssim(t, t, data_range=1.0).item() == pytest.approx(1.0, abs=1e-6)
    s1 = M.ssim(t + 0.05 * torch.randn_like(t), t, data_range=1.0).item()
    s2 = M.ssim(t + 0.3 * torch.randn_like(t), t, data_range=1.0).item()
    assert 1.0 > s1 > s2


@pytest.mark.parametrize("shape", [(24, 30), (11, 11), (17, 40)])
def test_ssim_parity_with_skimage(shape):
    skm = pytest.importorskip("skimage.metrics")
    t = torch.rand(2, 3, *shape, dtype=torch.float64) * 5 - 1
    p = t + 0.4 * torch.randn_like(t)
    R = float(t.max() - t.min())
    ours = M.ssim(p, t, data_range=R, reduction="none")
    ref = torch.tensor(
        [
            [
                skm.structural_similarity(
                    p[i, j].numpy(),
                    t[i, j].numpy(),
                    gaussian_weights=True,
                    sigma=1.5,
                    use_sample_covariance=False,
                    data_range=R,
                )
                for j in range(3)
            ]
            for i in range(2)
        ],
        dtype=torch.float64,
    )
    assert torch.allclose(ours, ref, atol=1e-10, rtol=0)
    assert M.ssim(p, t, data_range=R).item() == pytest.approx(ref.mean().item(), abs=1e-10)
    # float32 path stays close to the float64 one
    assert M.ssim(p.float(), t.float(), data_range=R).item() == pytest.approx(ref.mean().item(), abs=1e-4)


def test_band_errors_sum_to_mse_and_match_spectral_split():
    t = torch.randn(2, 3, 16, 20)
    p = t + 0.3 * torch.randn_like(t)
    be = M.band_errors(p, t, cutoff=0.2)
    assert set(be) == {"low", "high"}
    assert torch.allclose(be["low"] + be["high"], M.mse(p, t), rtol=1e-5)
    ref = band_energies_reference(p - t, (0.2,))
    assert torch.allclose(torch.stack([be["low"], be["high"]]), ref)
    # a pure low-frequency error lands in the low band only
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(20.0), indexing="ij")
    smooth = torch.cos(2 * math.pi * xx / 20)  # r = 1/20 <= 0.2
    be = M.band_errors(t + smooth, t, cutoff=0.2)
    assert be["high"].item() == pytest.approx(0.0, abs=1e-6)
    assert be["low"].item() == pytest.approx(0.5, rel=1e-5)
    rel = M.band_errors(2 * t, t, cutoff=0.2, relative=True)
    assert rel["low"].item() == pytest.approx(1.0, rel=1e-5) and rel["high"].item() == pytest.approx(1.0, rel=1e-5)


def _power_law_field(n: int, slope: float, count: int, rng: np.random.Generator) -> torch.Tensor:
    """Random-phase fields whose shell-summed spectrum goes like k^slope."""
    k = np.fft.fftfreq(n) * n
    kk = np.sqrt(k[:, None] ** 2 + k[None, :] ** 2)
    amp = np.zeros_like(kk)
    amp[kk > 0] = kk[kk > 0] ** ((slope - 1) / 2)  # modes per shell ~ k, so |F|^2 ~ k^(slope-1)
    phase = np.exp(2j * np.pi * rng.random((count, n, n)))
    return torch.from_numpy(np.fft.ifft2(amp * phase).real)


def test_energy_spectrum_parseval_and_k3_slope():
    rng = np.random.default_rng(0)
    f = _power_law_field(96, -3.0, 4, rng)
    k, E = M.energy_spectrum(f, include_corners=True)
    assert torch.allclose(E.sum(), f.square().mean(), rtol=1e-10)
    k, E = M.energy_spectrum(f)
    assert k[-1].item() == 48 and k.shape == E.shape
    assert M.spectrum_slope(k, E, k_range=(3, 30)) == pytest.approx(-3.0, abs=0.15)
    # a single mode sits in its own shell
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    k, E = M.energy_spectrum(torch.sin(2 * math.pi * 5 * xx / 32))
    assert int(E.argmax()) == 5 and E[5].item() == pytest.approx(0.5, rel=1e-6)


def test_spectrum_slope_exact_power_law():
    k = np.arange(0, 40, dtype=float)
    E = np.zeros_like(k)
    E[1:] = 7 * k[1:] ** -1.7
    assert M.spectrum_slope(k, E) == pytest.approx(-1.7, abs=1e-10)
    assert M.spectrum_slope(torch.from_numpy(k), torch.from_numpy(E), (5, 20)) == pytest.approx(-1.7, abs=1e-10)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: M.mse(torch.zeros(2, 3), torch.zeros(3, 2)), "pred shape"),
        (lambda: M.mae(torch.zeros(4), torch.zeros(5)), "pred shape"),
        (lambda: M.psnr(torch.zeros(2, 4, 4), torch.zeros(2, 4, 5)), "pred shape"),
        (lambda: M.ssim(torch.zeros(1, 16, 16), torch.zeros(1, 16, 15), data_range=1), "pred shape"),
        (lambda: M.band_errors(torch.zeros(8, 8), torch.zeros(8, 9)), "pred shape"),
        (lambda: M.mse(torch.tensor([1.0, float("nan")]), torch.zeros(2)), "pred contains NaN"),
        (lambda: M.mse(torch.zeros(2), torch.tensor([1.0, float("inf")])), "target contains NaN"),
        (lambda: M.ssim(torch.zeros(8, 8), torch.zeros(8, 8), data_range=1), "smaller than"),
        (lambda: M.ssim(torch.zeros(16, 16), torch.zeros(16, 16), data_range=0), "data_range"),
        (lambda: M.psnr(torch.zeros(4, 4), torch.zeros(4, 4)), "target is constant"),
        (lambda: M.psnr(torch.zeros(4, 4), torch.ones(4, 4), data_range=1, reduction="sum"), "reduction"),
        (lambda: M.band_errors(torch.zeros(4, 4), torch.zeros(4, 4), cutoff=-1), "cutoff"),
        (lambda: M.energy_spectrum(torch.zeros(5)), "field must be"),
        (lambda: M.spectrum_slope(np.arange(3.0), np.ones(4)), "k has"),
        (lambda: M.spectrum_slope(np.arange(3.0), np.ones(3), (10, 20)), "at least 2 shells"),
    ],
)
def test_bad_input_raises_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_bad_types_raise():
    with pytest.raises(TypeError, match="pred must be a tensor"):
        M.mse([1.0, 2.0], torch.zeros(2))
    with pytest.raises(TypeError, match="real tensor"):
        M.mse(torch.zeros(2, dtype=torch.complex64), torch.zeros(2, dtype=torch.complex64))
