"""2-D incompressible Navier–Stokes on the unit torus: the NSE data generator (FNO's setting), batched in torch.

Equation (vorticity form, DESIGN.md §3)::

    ∂ω/∂t + u·∇ω = νΔω + f,    u = (∂ψ/∂y, −∂ψ/∂x),    −Δψ = ω.

Grid and axes: ``w[..., i, j]`` is ω at ``x = i/H, y = j/W`` — x runs along dim −2, y along dim −1 (FNO's ``ij``
meshgrid). Wavenumbers are integers in FFT order (``k_x`` from ``fftfreq``, ``k_y ≥ 0`` from ``rfftfreq``); the symbol
of −Δ is ``L = 4π²(k_x² + k_y²)``.

Scheme (FNO's ``data_generation/navier_stokes/ns_2d.py``, pseudo-spectral, one step of size Δt)::

    ψ̂ = ω̂ / L;   u = ∂_y ψ,  v = −∂_x ψ,  ω_x, ω_y   (spectral derivatives, then to physical space)
    F̂ = FFT(u ω_x + v ω_y) · D                          (D: 2/3-rule de-aliasing, |k_x| ≤ H/3 and |k_y| ≤ W/3)
    ω̂ ← [(1 − ½ΔtνL) ω̂ − Δt F̂ + Δt f̂] / (1 + ½ΔtνL)   (Crank–Nicolson diffusion; explicit Euler advection + forcing)

Deliberate differences from ns_2d.py: the mean mode has ``ψ̂(0) = 0`` and no diffusion (ns_2d.py sets ``L(0) = 1``,
which damps the mean of ω by a factor (1 − ½Δtν)/(1 + ½Δtν) per step), so ∫ω changes only by ∫f; and the odd-derivative
multipliers are zero at the Nyquist wavenumber (its derivative is not a real field).

Time step (``dt=None``): chosen per sample at the start of every record interval from its current velocity,
``Δt = min(C_cfl · Δx / |u|_max,  C_adv · 2ν / |u|²_max)`` with ``C_cfl = C_adv = 0.5`` and ``Δx = min(1/H, 1/W)``, then
shrunk so that an integer number of steps lands exactly on the record time. The first bound is the advective CFL limit;
the second is the stability limit of explicit Euler advection with Crank–Nicolson diffusion: for a mode advected at
speed U the amplification is |1 − a/2 − iΔtUk| / (1 + a/2) with a = Δtνk², which is ≤ 1 iff Δt ≤ 2ν/U² (for every k).
At ν = 1e-5 the second bound dominates (FNO's fixed Δt = 1e-4 sits at it for |u| ≈ 0.45). Each sample gets its own Δt
(the batch runs the largest step count, finished samples are masked), so a sample's trajectory does not depend on what
else is in its batch. An explicit ``dt`` is used as an upper bound (rounded down to land on the record times).

Initial fields (``generate``): FNO's ``GaussianRF(2, s, alpha=2.5, tau=7)``: Fourier coefficients
``s²·√2·σ·(4π²|k|² + τ²)^(−α/2)·(ξ₁ + iξ₂)``, ξ standard normal, k = 0 zeroed, inverse FFT, real part; σ = τ^{α−1} = 7^1.5.
Sample ``i`` draws its noise from ``numpy.random.default_rng([seed, i])``, so the data set does not depend on the chunk
size or device. Forcing ``"fno"``: ``f = 0.1·(sin 2π(x + y) + cos 2π(x + y))``.

Unlike FNO (solved at 256², stored at 64²) the generator solves at ``solver_resolution`` (default: ``resolution``) and
keeps every ``solver_resolution // resolution``-th grid point.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import torch

from ._params import merge_preset, positive

__all__ = [
    "solve",
    "generate",
    "iter_generate",
    "load_or_generate",
    "cache_params",
    "cached_dataset",
    "gaussian_random_field",
    "fno_forcing",
    "stable_dt",
    "PRESETS",
]

CFL_SAFETY = 0.5  # fraction of the advective CFL limit Δx/|u|_max
ADVECTION_SAFETY = 0.5  # fraction of the explicit-advection limit 2ν/|u|²_max
MAX_STEPS_PER_RECORD = 10_000_000  # a step count beyond this means the flow blew up or ν is absurdly small

# Named parameter sets for ``generate`` and ``load_or_generate``.
PRESETS: dict[str, dict] = {
    # Demo-sized: 120 samples of 32² in well under a minute on 2 CPU cores (ν = 1e-3 keeps Δt large).
    "small": dict(n=120, resolution=32, visc=1e-3, t_final=20.0, record_steps=20),
    # CI-sized (``sdkd reproduce --budget smoke``): 20 samples of 16², a few seconds.
    "tiny": dict(n=20, resolution=16, visc=1e-3, t_final=10.0, record_steps=20),
    # FNO's ν = 1e-5 set (NavierStokes_V1e-5_N1200_T20): 1200 × 20 × 64², GPU territory.
    "fno": dict(n=1200, resolution=64, visc=1e-5, t_final=20.0, record_steps=20),
}

Forcing = Union[str, torch.Tensor, None]


# --------------------------------------------------------------------------------------------------- spectral operators
@dataclass(frozen=True)
class _Spectral:
    """Wavenumber-space operators for an (H, W) grid on the unit torus, shape (H, W//2 + 1)."""

    h: int
    w: int
    lap: torch.Tensor  # 4π²|k|², 0 at k = 0 (real)
    inv_lap: torch.Tensor  # 1/lap, 0 at k = 0 (real)
    ddx: torch.Tensor  # 2πi k_x, 0 at the Nyquist row (complex)
    ddy: torch.Tensor  # 2πi k_y, 0 at the Nyquist column (complex)
    dealias: torch.Tensor  # 1 where |k_x| ≤ H/3 and |k_y| ≤ W/3 (real)


def _spectral(h: int, w: int, device: torch.device, dtype: torch.dtype) -> _Spectral:
    kx = torch.round(torch.fft.fftfreq(h, device=device, dtype=dtype) * h)[:, None]
    ky = torch.round(torch.fft.rfftfreq(w, device=device, dtype=dtype) * w)[None, :]
    lap = 4 * math.pi**2 * (kx**2 + ky**2)
    inv_lap = torch.where(lap > 0, 1.0 / torch.where(lap > 0, lap, torch.ones_like(lap)), torch.zeros_like(lap))
    kx_odd = torch.where(2 * kx.abs() == h, torch.zeros_like(kx), kx)  # Nyquist only exists for even sizes
    ky_odd = torch.where(2 * ky.abs() == w, torch.zeros_like(ky), ky)
    ddx = (2j * math.pi) * kx_odd.expand(h, ky.shape[1])
    ddy = (2j * math.pi) * ky_odd.expand(h, ky.shape[1])
    dealias = ((kx.abs() <= h / 3) & (ky.abs() <= w / 3)).to(dtype)
    return _Spectral(h, w, lap, inv_lap, ddx, ddy, dealias)


def _velocity(w_hat: torch.Tensor, op: _Spectral) -> tuple[torch.Tensor, torch.Tensor]:
    psi_hat = w_hat * op.inv_lap
    u, v = torch.fft.irfft2(torch.stack((op.ddy * psi_hat, -op.ddx * psi_hat)), s=(op.h, op.w)).unbind(0)
    return u, v


def _advection_hat(w_hat: torch.Tensor, op: _Spectral) -> torch.Tensor:
    """De-aliased FFT of u·∇ω, computed in physical space."""
    psi_hat = w_hat * op.inv_lap
    spec = torch.stack((op.ddy * psi_hat, -op.ddx * psi_hat, op.ddx * w_hat, op.ddy * w_hat))
    u, v, wx, wy = torch.fft.irfft2(spec, s=(op.h, op.w)).unbind(0)
    return torch.fft.rfft2(u * wx + v * wy) * op.dealias


def _max_speed(w_hat: torch.Tensor, op: _Spectral) -> torch.Tensor:
    u, v = _velocity(w_hat, op)
    return torch.sqrt(u * u + v * v).amax(dim=(-2, -1))


def stable_dt(w: torch.Tensor, visc: float) -> torch.Tensor:
    """Per-sample stable time step ``min(C_cfl·Δx/|u|max, C_adv·2ν/|u|²max)`` for vorticity ``w: (B, H, W)``.

    Returns a ``(B,)`` tensor; ``inf`` for a sample at rest (no advective limit).
    """
    _check_field(w, "w")
    visc = positive(visc, "visc")
    op = _spectral(w.shape[-2], w.shape[-1], w.device, w.dtype)
    return _stable_dt_hat(torch.fft.rfft2(w), op, visc)


def _stable_dt_hat(w_hat: torch.Tensor, op: _Spectral, visc: float) -> torch.Tensor:
    speed = _max_speed(w_hat, op)
    dx = min(1.0 / op.h, 1.0 / op.w)
    safe = torch.where(speed > 0, speed, torch.ones_like(speed))
    dt = torch.minimum(CFL_SAFETY * dx / safe, ADVECTION_SAFETY * 2.0 * visc / safe**2)
    return torch.where(speed > 0, dt, torch.full_like(dt, math.inf))


# ------------------------------------------------------------------------------------------------------- validation
def _check_field(w0: torch.Tensor, name: str) -> None:
    if not isinstance(w0, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, H, W), got {type(w0).__name__}")
    if w0.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{name} must be float32 or float64, got {w0.dtype}")
    if w0.dim() != 3:
        raise ValueError(f"{name} must have shape (B, H, W), got {tuple(w0.shape)}")
    if w0.shape[0] < 1 or w0.shape[1] < 4 or w0.shape[2] < 4:
        raise ValueError(f"{name} must have B >= 1 and H, W >= 4, got {tuple(w0.shape)}")
    if not bool(torch.isfinite(w0).all()):
        raise ValueError(f"{name} contains NaN or inf")


def fno_forcing(h: int, w: int | None = None, *, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """FNO's forcing ``0.1·(sin 2π(x + y) + cos 2π(x + y))`` on the grid ``x = i/H, y = j/W``, shape (H, W)."""
    w = h if w is None else w
    x = torch.arange(h, device=device, dtype=torch.float64)[:, None] / h
    y = torch.arange(w, device=device, dtype=torch.float64)[None, :] / w
    phase = 2 * math.pi * (x + y)
    return (0.1 * (torch.sin(phase) + torch.cos(phase))).to(dtype)


def _forcing_tensor(forcing: Forcing, w0: torch.Tensor) -> torch.Tensor | None:
    b, h, w = w0.shape
    if forcing is None:
        return None
    if isinstance(forcing, str):
        if forcing != "fno":
            raise ValueError(f"forcing must be 'fno', None or a tensor, got {forcing!r}")
        return fno_forcing(h, w, device=w0.device, dtype=w0.dtype)
    if not isinstance(forcing, torch.Tensor):
        raise TypeError(f"forcing must be 'fno', None or a torch.Tensor, got {type(forcing).__name__}")
    if tuple(forcing.shape) not in ((h, w), (b, h, w)):
        raise ValueError(
            f"forcing must have shape ({h}, {w}) or ({b}, {h}, {w}) to match w0, got {tuple(forcing.shape)}"
        )
    if not forcing.is_floating_point() or forcing.is_complex():
        raise TypeError(f"forcing must be a real floating tensor, got {forcing.dtype}")
    if not bool(torch.isfinite(forcing).all()):
        raise ValueError("forcing contains NaN or inf")
    return forcing.to(device=w0.device, dtype=w0.dtype)


# ------------------------------------------------------------------------------------------------------------ solver
def solve(
    w0: torch.Tensor,
    *,
    visc: float,
    t_final: float,
    record_steps: int,
    forcing: Forcing = "fno",
    dt: float | None = None,
    on_record: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Integrate vorticity ``w0: (B, H, W)`` (float32/float64, any device) on the unit torus.

    Returns ``(B, record_steps, H, W)``: ω at ``t_final·i/record_steps`` for ``i = 1..record_steps`` (ω₀ not included),
    in ``w0``'s dtype and device. ``forcing``: ``"fno"``, ``None`` or a tensor ``(H, W)`` / ``(B, H, W)``. ``dt=None``
    picks a stable step per sample (see the module docstring); otherwise ``dt`` is the largest step used.
    ``on_record(i)`` is called after record ``i`` (1-based), e.g. for a progress bar.
    """
    _check_field(w0, "w0")
    visc = positive(visc, "visc")
    t_final = positive(t_final, "t_final")
    record_steps = positive(record_steps, "record_steps", integer=True)
    if dt is not None:
        dt = positive(dt, "dt")
    f = _forcing_tensor(forcing, w0)

    b, h, w = w0.shape
    op = _spectral(h, w, w0.device, w0.dtype)
    w_hat = torch.fft.rfft2(w0)
    f_hat = None if f is None else torch.fft.rfft2(f)
    interval = t_final / record_steps
    out = w0.new_empty(b, record_steps, h, w)
    with torch.no_grad():
        for r in range(record_steps):
            if dt is None:
                dt_max = _stable_dt_hat(w_hat, op, visc).clamp(max=interval)
            else:
                dt_max = torch.full((b,), min(dt, interval), device=w0.device, dtype=w0.dtype)
            # Integer step counts that land exactly on the record time (tolerate round-off in interval/dt).
            steps = torch.ceil(interval / dt_max * (1 - 1e-12)).clamp(min=1)
            n_max = int(steps.max())
            if n_max > MAX_STEPS_PER_RECORD:
                raise FloatingPointError(
                    f"stable time step collapsed ({n_max} steps per record at t={interval * r:g}): the flow blew up "
                    f"or visc={visc:g} is too small for this resolution; pass dt= to override"
                )
            w_hat = _advance(w_hat, f_hat, op, visc, interval / steps, steps, n_max)
            frame = torch.fft.irfft2(w_hat, s=(h, w))
            if not bool(torch.isfinite(frame).all()):
                raise FloatingPointError(
                    f"the solution became non-finite before t={interval * (r + 1):g}; use a smaller dt (got dt={dt})"
                )
            out[:, r] = frame
            if on_record is not None:
                on_record(r + 1)
    return out


def _advance(
    w_hat: torch.Tensor,
    f_hat: torch.Tensor | None,
    op: _Spectral,
    visc: float,
    dt: torch.Tensor,
    steps: torch.Tensor,
    n_max: int,
) -> torch.Tensor:
    """``steps[b]`` Crank–Nicolson/Euler steps of size ``dt[b]`` per sample; samples that are done are held fixed."""
    dt3 = dt.view(-1, 1, 1)
    half = 0.5 * dt3 * visc * op.lap
    decay = (1 - half) / (1 + half)  # (B, H, W//2+1)
    gain = dt3 / (1 + half)
    uniform = bool((steps == n_max).all())
    steps3 = steps.view(-1, 1, 1)
    for j in range(n_max):
        rhs = _advection_hat(w_hat, op)
        if f_hat is not None:
            rhs = rhs - f_hat
        new = decay * w_hat - gain * rhs
        w_hat = new if uniform else torch.where(steps3 > j, new, w_hat)
    return w_hat


# --------------------------------------------------------------------------------------------------------- generator
def gaussian_random_field(
    n: int,
    resolution: int,
    *,
    seed: int = 0,
    start: int = 0,
    alpha: float = 2.5,
    tau: float = 7.0,
    sigma: float | None = None,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """FNO's periodic Gaussian random field (``GaussianRF``, dim 2): ``n`` samples ``(n, s, s)``, zero spatial mean.

    Sample ``start + i`` uses ``numpy.random.default_rng([seed, start + i])``, so samples are reproducible one by one.
    Pointwise variance: ``2σ² Σ_{k≠0} (4π²|k|² + τ²)^(−α)`` with ``σ = τ^(α−1)`` by default.
    """
    n = positive(n, "n", integer=True)
    s = positive(resolution, "resolution", integer=True)
    sigma = tau ** (alpha - 1.0) if sigma is None else sigma
    k = np.rint(np.fft.fftfreq(s) * s)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    sqrt_eig = s**2 * math.sqrt(2.0) * sigma * (4 * math.pi**2 * k2 + tau**2) ** (-alpha / 2.0)
    sqrt_eig[0, 0] = 0.0
    xi = np.stack([np.random.default_rng([seed, start + i]).standard_normal((2, s, s)) for i in range(n)])
    field = np.fft.ifft2(sqrt_eig * (xi[:, 0] + 1j * xi[:, 1])).real
    return torch.from_numpy(field).to(device=device, dtype=dtype)


def _default_device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _default_chunk(n: int, res: int, device: torch.device) -> int:
    budget = (4 << 30) if device.type == "cuda" else (256 << 20)
    per_sample = res * res * 4 * 48  # ≈ live fp32 fields per sample during a step, with headroom
    return max(1, min(n, budget // per_sample))


def iter_generate(
    n: int,
    *,
    resolution: int = 64,
    visc: float = 1e-5,
    t_final: float = 20.0,
    record_steps: int = 20,
    seed: int = 0,
    device=None,
    dt: float | None = None,
    forcing: Forcing = "fno",
    solver_resolution: int | None = None,
    chunk_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    on_record: Callable[[int], None] | None = None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(start, records)`` chunks of ``generate``'s output, ``records: (chunk, record_steps, R, R)`` on ``device``.

    Memory stays bounded by ``chunk_size`` samples; ``on_record(k)`` is called with the number of sample-records done
    since the last call (``chunk`` per record), for progress bars.
    """
    n = positive(n, "n", integer=True)
    resolution = positive(resolution, "resolution", integer=True)
    sres = resolution if solver_resolution is None else positive(solver_resolution, "solver_resolution", integer=True)
    if sres % resolution:
        raise ValueError(f"solver_resolution must be a multiple of resolution={resolution}, got {sres}")
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    dev = _default_device(device)
    chunk = _default_chunk(n, sres, dev) if chunk_size is None else positive(chunk_size, "chunk_size", integer=True)
    stride = sres // resolution
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        w0 = gaussian_random_field(m, sres, seed=int(seed), start=start, device=dev, dtype=dtype)
        cb = None if on_record is None else (lambda _i, m=m: on_record(m))
        rec = solve(w0, visc=visc, t_final=t_final, record_steps=record_steps, forcing=forcing, dt=dt, on_record=cb)
        yield start, rec[..., ::stride, ::stride].contiguous()


def generate(
    n: int,
    *,
    resolution: int = 64,
    visc: float = 1e-5,
    t_final: float = 20.0,
    record_steps: int = 20,
    seed: int = 0,
    device=None,
    dt: float | None = None,
    forcing: Forcing = "fno",
    solver_resolution: int | None = None,
    chunk_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    progress: bool = False,
) -> torch.Tensor:
    """``n`` trajectories from FNO's random initial fields: ``(n, record_steps, resolution, resolution)``.

    ``device=None`` uses CUDA when available. Records are at ``t_final·i/record_steps``, i = 1..record_steps (FNO's
    ``u``; the initial field is not included). See the module docstring for the scheme, Δt and seeding.
    """
    bar = _progress_bar(n * positive(record_steps, "record_steps", integer=True), progress)
    try:
        chunks = [
            rec
            for _, rec in iter_generate(
                n,
                resolution=resolution,
                visc=visc,
                t_final=t_final,
                record_steps=record_steps,
                seed=seed,
                device=device,
                dt=dt,
                forcing=forcing,
                solver_resolution=solver_resolution,
                chunk_size=chunk_size,
                dtype=dtype,
                on_record=None if bar is None else bar.update,
            )
        ]
    finally:
        if bar is not None:
            bar.close()
    return torch.cat(chunks)


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="navier-stokes", unit="rec")


# ------------------------------------------------------------------------------------------------------------- cache
CACHE_FORMAT = "sdkd.navier_stokes/1"


def cache_params(
    preset: str | None = None,
    **overrides,
) -> dict:
    """The full generator parameters for ``preset`` (or ``generate``'s defaults) with ``overrides`` (``None`` = unset)."""
    defaults = dict(n=None, resolution=64, visc=1e-5, t_final=20.0, record_steps=20, seed=0, dt=None, forcing="fno")
    params = merge_preset({**defaults, "solver_resolution": None}, PRESETS, preset, overrides)
    if params["n"] is None:
        raise ValueError("n must be given (or a preset chosen)")
    if params["forcing"] not in ("fno", "none"):
        raise ValueError(f"forcing must be 'fno' or 'none' for cached data, got {params['forcing']!r}")
    for name in ("n", "resolution", "record_steps"):
        params[name] = positive(params[name], name, integer=True)
    for name in ("visc", "t_final"):
        params[name] = positive(params[name], name)
    if params["dt"] is not None:
        params["dt"] = positive(params["dt"], "dt")
    if params["solver_resolution"] is not None:
        sres = positive(params["solver_resolution"], "solver_resolution", integer=True)
        if sres % params["resolution"]:
            raise ValueError(f"solver_resolution must be a multiple of resolution={params['resolution']}, got {sres}")
        params["solver_resolution"] = sres
    if not isinstance(params["seed"], numbers.Integral) or isinstance(params["seed"], bool) or params["seed"] < 0:
        raise ValueError(f"seed must be a non-negative integer, got {params['seed']!r}")
    params["seed"] = int(params["seed"])
    return params


def load_or_generate(
    n: int | None = None,
    *,
    resolution: int | None = None,
    visc: float | None = None,
    t_final: float | None = None,
    record_steps: int | None = None,
    seed: int | None = None,
    dt: float | None = None,
    forcing: str | None = None,
    solver_resolution: int | None = None,
    preset: str | None = None,
    root=None,
    device=None,
    chunk_size: int | None = None,
    progress: bool = True,
    force: bool = False,
) -> tuple[np.ndarray, Path]:
    """The cached data set ``(N, T, H, W)`` float32 (read-only memory map) and its ``.npy`` path; generated if needed.

    Parameters left ``None`` come from ``preset`` (see ``PRESETS``), else from ``generate``'s defaults; ``forcing`` is
    ``"fno"`` or ``"none"``. ``root`` defaults to ``$SDKD_DATA_DIR`` or ``~/.cache/sdkd``; files live in
    ``<root>/navier_stokes/``. The cache is reused only if its metadata (all generator parameters, seed, sdkd version)
    matches and the file is complete; generation runs in chunks written straight into the (temporary) memory map.
    """
    params = cache_params(
        preset,
        n=n,
        resolution=resolution,
        visc=visc,
        t_final=t_final,
        record_steps=record_steps,
        seed=seed,
        dt=dt,
        forcing=forcing,
        solver_resolution=solver_resolution,
    )
    array, path, _ = cached_dataset(
        params, root=root, device=device, chunk_size=chunk_size, progress=progress, force=force
    )
    return array, path


def cached_dataset(
    params: dict, *, root=None, device=None, chunk_size: int | None = None, progress: bool = True, force: bool = False
) -> tuple[np.ndarray, Path, bool]:
    """``load_or_generate`` for full ``params`` (from ``cache_params``); also says whether the cache was reused."""
    import time

    import sdkd
    from sdkd.data import cache

    folder = (cache.default_root() if root is None else Path(root).expanduser()) / "navier_stokes"
    stem = folder / f"ns_n{params['n']}_r{params['resolution']}_{cache.params_key(params)}"
    shape = (params["n"], params["record_steps"], params["resolution"], params["resolution"])
    match = {"format": CACHE_FORMAT, "params": params, "sdkd_version": sdkd.__version__}

    def fill(out: np.ndarray) -> dict:
        t0 = time.perf_counter()
        dev = _default_device(device)
        bar = _progress_bar(params["n"] * params["record_steps"], progress)
        kwargs = {k: v for k, v in params.items() if k not in ("n", "forcing")}
        try:
            for start, rec in iter_generate(
                params["n"],
                **kwargs,
                forcing=None if params["forcing"] == "none" else "fno",
                device=dev,
                chunk_size=chunk_size,
                on_record=None if bar is None else bar.update,
            ):
                out[start : start + rec.shape[0]] = rec.cpu().numpy()
        finally:
            if bar is not None:
                bar.close()
        return {
            "device": str(dev),
            "elapsed_s": round(time.perf_counter() - t0, 3),
            "torch_version": torch.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "layout": "(N, T, H, W) vorticity at t_final*i/record_steps, i=1..T; x along H, y along W",
        }

    return cache.cached_array(stem, match, shape, np.float32, fill, force=force)
