"""The Navier–Stokes generator against exact solutions and invariants of the equations (float64, small grids)."""

from __future__ import annotations

import math

import pytest
import torch

from sdkd.data import navier_stokes as ns

F64 = torch.float64


def grid(h: int, w: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """x = i/H along dim -2, y = j/W along dim -1."""
    w = h if w is None else w
    x = torch.arange(h, dtype=F64)[:, None] / h
    y = torch.arange(w, dtype=F64)[None, :] / w
    return x, y


def bandlimited(b: int, n: int, kmax: int = 2, seed: int = 0) -> torch.Tensor:
    """Random smooth zero-mean fields with modes |k_x|, |k_y| <= kmax."""
    g = torch.Generator().manual_seed(seed)
    x, y = grid(n)
    w = torch.zeros(b, n, n, dtype=F64)
    for kx in range(-kmax, kmax + 1):
        for ky in range(0, kmax + 1):
            if ky == 0 and kx <= 0:
                continue
            a = torch.randn(b, 2, 1, 1, generator=g, dtype=F64)
            phase = 2 * math.pi * (kx * x + ky * y)
            w = w + a[:, 0] * torch.cos(phase) + a[:, 1] * torch.sin(phase)
    return w


def energy_enstrophy(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Kinetic energy ½∫|u|² and enstrophy ½∫ω² per sample, from the full 2-D spectrum (independent of the solver)."""
    n_h, n_w = w.shape[-2:]
    kx = torch.fft.fftfreq(n_h, dtype=F64)[:, None] * n_h
    ky = torch.fft.fftfreq(n_w, dtype=F64)[None, :] * n_w
    lap = 4 * math.pi**2 * (kx**2 + ky**2)
    power = torch.fft.fft2(w, norm="forward").abs() ** 2
    inv = torch.where(lap > 0, 1 / torch.where(lap > 0, lap, torch.ones_like(lap)), torch.zeros_like(lap))
    return 0.5 * (power * inv).sum((-2, -1)), 0.5 * power.sum((-2, -1))


# --------------------------------------------------------------------------------------------------- exact solutions
@pytest.mark.parametrize("shape", [(16, 16), (12, 20)])
def test_laplacian_eigenmodes_decay_exactly(shape):
    """Modes with one |k| have u·∇ω = 0: ω(t) = ω₀ exp(−ν 4π²|k|² t), whatever the amplitude."""
    h, w = shape
    x, y = grid(h, w)
    nu = 1e-2
    w0 = torch.stack(
        [
            3 * torch.sin(2 * math.pi * (2 * x + y)) + torch.cos(2 * math.pi * (x - 2 * y)),  # |k|² = 5
            torch.sin(2 * math.pi * x) * torch.sin(2 * math.pi * y),  # Taylor–Green, |k|² = 2
        ]
    )
    k2 = torch.tensor([5.0, 2.0], dtype=F64)
    out = ns.solve(w0, visc=nu, t_final=0.5, record_steps=4, forcing=None, dt=5e-3)
    t = torch.arange(1, 5, dtype=F64) / 8
    exact = w0[:, None] * torch.exp(-nu * 4 * math.pi**2 * k2[:, None] * t)[..., None, None]
    torch.testing.assert_close(out, exact, rtol=3e-5, atol=1e-7)  # Crank–Nicolson error ≈ t(νL)³dt²/12


@pytest.mark.parametrize("shape", [(16, 16), (16, 24)])
def test_advection_term_matches_hand_derivation(shape):
    """ω = a cos 2πx + b cos 4πy: ψ = a cos 2πx/(4π²) + b cos 4πy/(16π²), u = ψ_y, v = −ψ_x, so
    ∂ω/∂t = −(u ω_x + v ω_y) = (3/2)·a·b·sin 2πx · sin 4πy. Checks signs, axes and the Poisson solve."""
    h, w = shape
    x, y = grid(h, w)
    a, b = 1.3, -0.7
    w0 = (a * torch.cos(2 * math.pi * x) + b * torch.cos(4 * math.pi * y))[None]
    dt = 1e-7
    out = ns.solve(w0, visc=1e-12, t_final=dt, record_steps=1, forcing=None, dt=dt)
    rate = (out[0, 0] - w0[0]) / dt
    exact = 1.5 * a * b * torch.sin(2 * math.pi * x) * torch.sin(4 * math.pi * y)
    torch.testing.assert_close(rate, exact, rtol=0, atol=1e-6 * exact.abs().max().item())


@pytest.mark.parametrize("shape", [(16, 16), (12, 18)])
def test_nonlinear_term_is_dealiased_by_the_two_thirds_rule(shape):
    """One tiny step from a rough field: the change has no content outside |k_x| <= H/3, |k_y| <= W/3."""
    h, w = shape
    w0 = torch.randn(1, h, w, dtype=F64)
    w0 = w0 - w0.mean()
    dt = 1e-7
    rate = (ns.solve(w0, visc=1e-12, t_final=dt, record_steps=1, forcing=None, dt=dt)[0, 0] - w0[0]) / dt
    spec = torch.fft.fft2(rate).abs()
    kx = (torch.fft.fftfreq(h, dtype=F64) * h).abs()[:, None]
    ky = (torch.fft.fftfreq(w, dtype=F64) * w).abs()[None, :]
    kept = (kx <= h / 3) & (ky <= w / 3)
    assert spec[kept].max() > 1.0
    assert spec[~kept].max() < 1e-6 * spec[kept].max()


def test_kolmogorov_flow_is_steady():
    """Kolmogorov-type flow ω₀ = sin 2π·3y + ½ cos 2π·3x (one shell, |k|² = 9) with forcing f = ν·4π²·9·ω₀:
    diffusion balances forcing and u·∇ω = 0, so ω stays ω₀."""
    x, y = grid(16)
    nu = 2e-2
    w0 = (torch.sin(2 * math.pi * 3 * y) + 0.5 * torch.cos(2 * math.pi * 3 * x))[None]
    forcing = nu * 4 * math.pi**2 * 9 * w0[0]
    out = ns.solve(w0, visc=nu, t_final=2.0, record_steps=4, forcing=forcing)
    torch.testing.assert_close(out, w0[:, None].expand_as(out), rtol=0, atol=1e-10)


def test_fno_forcing_drives_linear_then_saturating_growth():
    """From rest, FNO's forcing (a single |k|² = 2 shell) gives ω = f·(1 − e^{−νLt})/(νL), L = 8π² (≈ f·t early)."""
    n = 16
    x, y = grid(n)
    nu = 1e-2
    f = 0.1 * (torch.sin(2 * math.pi * (x + y)) + torch.cos(2 * math.pi * (x + y)))
    torch.testing.assert_close(ns.fno_forcing(n, dtype=F64), f)
    out = ns.solve(torch.zeros(1, n, n, dtype=F64), visc=nu, t_final=1.0, record_steps=4, forcing="fno", dt=5e-3)
    lam = nu * 8 * math.pi**2
    t = torch.arange(1, 5, dtype=F64) / 4
    exact = f * ((1 - torch.exp(-lam * t)) / lam)[:, None, None]
    torch.testing.assert_close(out[0], exact, rtol=1e-5, atol=1e-9)


# ----------------------------------------------------------------------------------------------------------- invariants
@pytest.mark.parametrize("forcing,rate", [("fno", 0.0), (None, 0.0), ("const", 0.25)])
def test_mean_vorticity_changes_only_by_mean_forcing(forcing, rate):
    w0 = ns.gaussian_random_field(2, 16, dtype=F64) + 0.3
    if forcing == "const":
        forcing = torch.full((16, 16), rate, dtype=F64)
    out = ns.solve(w0, visc=1e-3, t_final=1.0, record_steps=4, forcing=forcing)
    t = torch.arange(1, 5, dtype=F64) / 4
    torch.testing.assert_close(out.mean((-2, -1)), (0.3 + rate * t).expand(2, 4), rtol=0, atol=1e-12)


def test_unforced_viscous_flow_loses_energy_and_enstrophy():
    w0 = ns.gaussian_random_field(3, 32, seed=1, dtype=F64)
    out = ns.solve(w0, visc=1e-3, t_final=2.0, record_steps=8, forcing=None)
    e, z = energy_enstrophy(torch.cat([w0[:, None], out], dim=1))
    assert bool((e.diff(dim=1) < 0).all()), e
    assert bool((z.diff(dim=1) < 0).all()), z
    assert bool((z[:, -1] < 0.95 * z[:, 0]).all())  # and by a visible amount


def test_nearly_inviscid_flow_conserves_energy_and_enstrophy():
    """The nonlinear term moves ω around (> 30 % change here) but conserves ∫|u|² and ∫ω² (up to Euler's O(dt))."""
    w0 = bandlimited(2, 24)
    out = ns.solve(w0, visc=1e-6, t_final=0.3, record_steps=1, forcing=None, dt=1.5e-3)
    assert ((out[:, -1] - w0).norm() / w0.norm()).item() > 0.3
    (e0, z0), (e1, z1) = energy_enstrophy(w0), energy_enstrophy(out[:, -1])
    torch.testing.assert_close(e1, e0, rtol=2e-3, atol=0)
    torch.testing.assert_close(z1, z0, rtol=4e-3, atol=0)


# ----------------------------------------------------------------------------------------------------------- convergence
def test_first_order_convergence_in_dt():
    w0 = ns.gaussian_random_field(2, 16, dtype=F64)
    kw = dict(visc=1e-2, t_final=0.5, record_steps=1, forcing="fno")
    runs = [ns.solve(w0, dt=d, **kw) for d in (0.02, 0.01, 0.005)]
    d_coarse = (runs[0] - runs[1]).abs().max().item()
    d_fine = (runs[1] - runs[2]).abs().max().item()
    assert 1.7 < d_coarse / d_fine < 2.4, (d_coarse, d_fine)  # halving dt halves the error


def test_spectral_convergence_in_resolution():
    """The same band-limited flow on 16², 32², 64²: the error vs 64² collapses with resolution."""

    def run(n):
        return ns.solve(bandlimited(1, n), visc=1e-2, t_final=0.2, record_steps=1, dt=4e-3)[:, -1]

    r16, r32, r64 = run(16), run(32), run(64)
    e16 = (r16 - r64[:, ::4, ::4]).abs().max().item()
    e32 = (r32 - r64[:, ::2, ::2]).abs().max().item()
    assert e32 < 1e-4 * r64.abs().max().item()
    assert e32 < e16 / 100


# ----------------------------------------------------------------------------------------------------------- time step
def test_stable_dt_formula_on_a_shear_flow():
    """ω = A sin 2πx gives v = −A cos 2πx / (2π), so |u|max = A/(2π)."""
    x, y = grid(32)
    amp, nu = 3.0, 1e-4
    w = (amp * torch.sin(2 * math.pi * x) + 0 * y)[None]
    speed = amp / (2 * math.pi)
    expected = min(ns.CFL_SAFETY / 32 / speed, ns.ADVECTION_SAFETY * 2 * nu / speed**2)
    assert ns.stable_dt(w, nu).item() == pytest.approx(expected, rel=1e-9)
    assert math.isinf(ns.stable_dt(torch.zeros(1, 8, 8, dtype=F64), nu).item())


def test_samples_do_not_depend_on_their_batch():
    """Each sample picks its own Δt, so solving it alone or in a batch gives the same trajectory."""
    w0 = ns.gaussian_random_field(3, 16, dtype=F64) * torch.tensor([0.5, 1.0, 3.0], dtype=F64)[:, None, None]
    kw = dict(visc=1e-3, t_final=1.0, record_steps=2)
    batched = ns.solve(w0, **kw)
    for i in range(3):
        torch.testing.assert_close(batched[i : i + 1], ns.solve(w0[i : i + 1], **kw), rtol=0, atol=1e-12)


def test_blow_up_is_reported():
    w0 = 50 * ns.gaussian_random_field(1, 16, dtype=F64)
    with pytest.raises(FloatingPointError, match="smaller dt"):
        ns.solve(w0, visc=1e-5, t_final=50.0, record_steps=1, forcing=None, dt=1.0)


# ----------------------------------------------------------------------------------------------------------- generator
def test_gaussian_random_field_statistics_and_seeding():
    n, alpha, tau = 16, 2.5, 7.0
    field = ns.gaussian_random_field(400, n, seed=3, dtype=F64)
    assert field.shape == (400, n, n)
    assert field.mean((-2, -1)).abs().max().item() < 1e-12  # k = 0 removed
    k = torch.fft.fftfreq(n, dtype=F64) * n
    spec = (4 * math.pi**2 * (k[:, None] ** 2 + k[None, :] ** 2) + tau**2) ** (-alpha)
    expected_var = 2 * tau ** (2 * alpha - 2) * (spec.sum() - spec[0, 0])
    assert field.var().item() == pytest.approx(expected_var.item(), rel=0.1)
    again = ns.gaussian_random_field(1, n, seed=3, start=2, dtype=F64)
    torch.testing.assert_close(again[0], field[2], rtol=0, atol=0)
    assert not torch.equal(ns.gaussian_random_field(1, n, seed=4, dtype=F64), field[:1])


def test_generate_is_chunk_independent_and_subsamples():
    kw = dict(resolution=8, visc=1e-2, t_final=0.5, record_steps=2, seed=5, device="cpu", dtype=F64)
    a = ns.generate(3, chunk_size=3, **kw)
    b = ns.generate(3, chunk_size=2, **kw)
    assert a.shape == (3, 2, 8, 8) and a.dtype == F64
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    fine = ns.generate(3, **{**kw, "resolution": 16})
    sub = ns.generate(3, solver_resolution=16, **kw)
    torch.testing.assert_close(sub, fine[..., ::2, ::2], rtol=0, atol=1e-12)
    w0 = ns.gaussian_random_field(3, 8, seed=5, dtype=F64)
    torch.testing.assert_close(a, ns.solve(w0, visc=1e-2, t_final=0.5, record_steps=2), rtol=0, atol=1e-12)


def test_generate_default_dtype_and_presets():
    out = ns.generate(2, resolution=8, visc=1e-2, t_final=0.2, record_steps=3, device="cpu")
    assert out.shape == (2, 3, 8, 8) and out.dtype == torch.float32 and bool(torch.isfinite(out).all())
    assert ns.PRESETS["fno"] == dict(n=1200, resolution=64, visc=1e-5, t_final=20.0, record_steps=20)
    assert ns.PRESETS["small"]["record_steps"] == 20


# ----------------------------------------------------------------------------------------------------------- bad input
def _w(*shape, dtype=F64):
    return torch.zeros(*shape, dtype=dtype)


OK = dict(visc=1e-3, t_final=1.0, record_steps=2)


@pytest.mark.parametrize(
    "w0,kwargs,exc,name",
    [
        ([[0.0]], {}, TypeError, "w0"),
        (_w(1, 8, 8, dtype=torch.int64), {}, TypeError, "w0"),
        (_w(1, 8, 8, dtype=torch.float16), {}, TypeError, "w0"),
        (_w(8, 8), {}, ValueError, "w0"),
        (_w(1, 2, 8), {}, ValueError, "w0"),
        (torch.full((1, 8, 8), math.nan, dtype=F64), {}, ValueError, "w0"),
        (_w(1, 8, 8), {"visc": 0.0}, ValueError, "visc"),
        (_w(1, 8, 8), {"visc": -1e-3}, ValueError, "visc"),
        (_w(1, 8, 8), {"visc": math.inf}, ValueError, "visc"),
        (_w(1, 8, 8), {"t_final": 0.0}, ValueError, "t_final"),
        (_w(1, 8, 8), {"record_steps": 0}, ValueError, "record_steps"),
        (_w(1, 8, 8), {"record_steps": 1.5}, TypeError, "record_steps"),
        (_w(1, 8, 8), {"dt": -1.0}, ValueError, "dt"),
        (_w(1, 8, 8), {"forcing": _w(8, 9)}, ValueError, "forcing"),
        (_w(1, 8, 8), {"forcing": _w(2, 8, 8)}, ValueError, "forcing"),
        (_w(1, 8, 8), {"forcing": "kolmogorov"}, ValueError, "forcing"),
        (_w(1, 8, 8), {"forcing": 1.0}, TypeError, "forcing"),
        (_w(1, 8, 8), {"forcing": torch.full((8, 8), math.inf, dtype=F64)}, ValueError, "forcing"),
    ],
)
def test_solve_rejects_bad_input(w0, kwargs, exc, name):
    with pytest.raises(exc, match=name):
        ns.solve(w0, **{**OK, **kwargs})


@pytest.mark.parametrize(
    "kwargs,exc,name",
    [
        ({"n": 0}, ValueError, "n"),
        ({"resolution": 0}, ValueError, "resolution"),
        ({"resolution": -8}, ValueError, "resolution"),
        ({"visc": 0.0}, ValueError, "visc"),
        ({"t_final": -1.0}, ValueError, "t_final"),
        ({"record_steps": 0}, ValueError, "record_steps"),
        ({"solver_resolution": 12}, ValueError, "solver_resolution"),
        ({"seed": -1}, ValueError, "seed"),
    ],
)
def test_generate_rejects_bad_input(kwargs, exc, name):
    args = {"n": 1, "resolution": 8, "visc": 1e-2, "t_final": 0.1, "record_steps": 1, "device": "cpu", **kwargs}
    with pytest.raises(exc, match=name):
        ns.generate(args.pop("n"), **args)
