"""2-D Rayleigh–Bénard convection: the RBC data generator (thermal lattice Boltzmann, batched in torch).

Problem (Boussinesq, DESIGN.md §3): a fluid layer of height H between two no-slip isothermal plates, hot at the bottom
(T = 1) and cold at the top (T = 0), periodic sides, width ``aspect × H``. Non-dimensional with the plate gap H, the
temperature difference ΔT and the free-fall velocity U = √(gαΔT H), so time is in free-fall units √(H / (gαΔT))::

    ∂u/∂t + u·∇u = −∇p + √(Pr/Ra) ∇²u + T ẑ,    ∇·u = 0,    ∂T/∂t + u·∇T = (1/√(Ra·Pr)) ∇²T.

Scheme: the double-distribution lattice Boltzmann method (the paper's data source, ref. [37], was computed with LBM;
this is the model of Shan 1997 and He, Chen & Doolen 1998, J. Comput. Phys. 146, which reproduce the onset and the
Nusselt numbers of 2-D rolls). D2Q9 BGK for the flow with Guo's forcing of the buoyancy ``F = gα(T − (1 − z)) ẑ``
(buoyancy of the deviation from the conduction profile: it differs from gα(T − ½) ẑ by a gradient, which the pressure
absorbs, and leaves the rest state with no hydrostatic density stratification, so that state is exact); D2Q5 BGK
for the temperature (a passive scalar advected by the flow). Walls sit half-way between nodes: half-way bounce-back
for the velocity (no slip), anti-bounce-back for the fixed temperature. Node ``(i, j)`` is the cell centre
``z = (i + ½)/H, x = (j + ½)/H``: **row 0 is the bottom (hot) plate**, rows go up. Streaming and both wall conditions
are one ``gather`` over all 14 populations, so a step is a few dozen whole-array kernels on any device.

Lattice units: the free-fall velocity is ``U ≤ max_lattice_velocity`` (default 0.1, Mach ≈ 0.17) lattice units, so
one free-fall time is ``H/U`` steps; ν = U·H·√(Pr/Ra), κ = U·H/√(Ra·Pr), τ_f = 3ν + ½, τ_T = 3κ + ½ (D2Q5 with c_s² =
⅓). ``U`` is lowered slightly so that an integer number of steps lands on each record time. The LBM time step is
tied to the grid (acoustic scaling): refining the grid also refines the time step, so grid convergence of the
Nusselt number is also time-step convergence.

Nusselt number: the volume average ``Nu = 1 + ⟨u_z T⟩ / κ`` (units κΔT/H, as He, Chen & Doolen 1998 use), exact for
the continuous equations because the vertical average of −∂T/∂z is ΔT/H; 1 in the conduction state.

Why LBM rather than a pseudo-spectral solver: it is what the paper's data came from, is local and explicit (whole-array
torch ops that run unchanged on a GPU), and handles the no-slip walls without a pressure solve. Its cost is many small
steps (H/U per free-fall time); the checks in ``tests/test_rbc.py`` (exact conduction state, onset bracketing
Ra_c ≈ 1708, Nusselt numbers of steady rolls against Clever & Busse 1974, grid convergence) run at small grids.
On a CPU such small grids run fastest with ``torch.set_num_threads(1)``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ._params import positive

__all__ = ["simulate", "iter_records", "RBCResult", "lattice_parameters", "check_resolution", "RA_CRITICAL"]

RA_CRITICAL = 1707.76  # no-slip plates (Chandrasekhar 1961), critical wavenumber 3.117

# D2Q9 velocities (c_x, c_z), weights and opposites; the first five are the D2Q5 lattice of the temperature.
_C = ((0, 0), (1, 0), (0, 1), (-1, 0), (0, -1), (1, 1), (-1, 1), (-1, -1), (1, -1))
_W9 = (4 / 9, 1 / 9, 1 / 9, 1 / 9, 1 / 9, 1 / 36, 1 / 36, 1 / 36, 1 / 36)
_W5 = (1 / 3, 1 / 6, 1 / 6, 1 / 6, 1 / 6)
_OPP = (0, 3, 4, 1, 2, 7, 8, 5, 6)


@dataclass(frozen=True)
class LatticeParameters:
    """Lattice units of one run: ``steps_per_record`` LBM steps per record, free-fall velocity ``u_ff``."""

    height: int
    steps_per_record: int
    u_ff: float
    nu: float
    kappa: float
    tau_f: float
    tau_t: float
    buoyancy: float  # gα in lattice units (ΔT = 1): U²/H


def lattice_parameters(
    rayleigh: float, prandtl: float, height: int, dt_save: float, max_lattice_velocity: float = 0.1
) -> LatticeParameters:
    """The lattice-unit parameters for one run (see the module docstring); ``height`` is the solver's cell count."""
    steps = max(1, math.ceil(dt_save * height / max_lattice_velocity - 1e-9))
    u = dt_save * height / steps
    nu = u * height * math.sqrt(prandtl / rayleigh)
    kappa = u * height / math.sqrt(rayleigh * prandtl)
    return LatticeParameters(height, steps, u, nu, kappa, 3 * nu + 0.5, 3 * kappa + 0.5, u * u / height)


def check_resolution(rayleigh: float, params: LatticeParameters) -> None:
    """Raise a one-line ``ValueError`` if the BGK relaxation times are too close to ½ (unstable) for this grid."""
    if params.tau_f - 0.5 < 2e-3 or params.tau_t - 0.5 < 2e-3:
        raise ValueError(
            f"Ra={rayleigh:g} is too high for a {params.height}-cell solver grid (relaxation times {params.tau_f:.4f}, "
            f"{params.tau_t:.4f} too close to 1/2): use a larger height or refine"
        )


@dataclass
class RBCResult:
    """Records of ``simulate``: fields on the (output) grid, row 0 at the bottom plate, free-fall units.

    ``temperature (…, T, H, W)``, ``velocity (…, T, 2, H, W)`` (components u_x, u_z), ``nusselt (…, T)``, ``time (T,)``;
    the leading batch dimension is present only when ``simulate`` was given several Rayleigh numbers or seeds.
    """

    temperature: torch.Tensor
    velocity: torch.Tensor
    nusselt: torch.Tensor
    time: torch.Tensor
    rayleigh: float | list[float]
    prandtl: float


# ------------------------------------------------------------------------------------------------------- validation
def _as_list(value, name: str) -> tuple[list, bool]:
    if isinstance(value, (list, tuple, np.ndarray, torch.Tensor)):
        vals = [v.item() if hasattr(v, "item") else v for v in value]
        if not vals:
            raise ValueError(f"{name} must not be empty")
        return vals, True
    return [value], False


def _seed(value) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
        raise ValueError(f"seed must be a non-negative integer, got {value!r}")
    return int(value)


# ------------------------------------------------------------------------------------------------------------ solver
class _Lattice:
    """A batch of LBM runs sharing one grid; per-run Ra and seeds (their τ's and forcing are (B, 1, 1, 1) tensors)."""

    def __init__(self, params: list[LatticeParameters], width: int, device: torch.device, dtype: torch.dtype):
        h, w = params[0].height, width
        self.h, self.w = h, w
        col = lambda vals: torch.tensor(vals, device=device, dtype=dtype).view(-1, 1, 1, 1)  # noqa: E731
        self.tau_f = col([p.tau_f for p in params])
        self.tau_t = col([p.tau_t for p in params])
        self.buoyancy = col([p.buoyancy for p in params])
        self.kappa = torch.tensor([p.kappa for p in params], device=device, dtype=torch.float64)
        self.u_ff = torch.tensor([p.u_ff for p in params], device=device, dtype=torch.float64)
        c = torch.tensor(_C, device=device, dtype=dtype)
        self.cx, self.cz = c[:, 0].view(1, 9, 1, 1), c[:, 1].view(1, 9, 1, 1)
        self.w9 = torch.tensor(_W9, device=device, dtype=dtype).view(1, 9, 1, 1)
        self.w5 = torch.tensor(_W5, device=device, dtype=dtype).view(1, 5, 1, 1)
        self.t_conduction = _conduction(h, w, device, dtype)
        self._build_streaming(device, dtype)

    def _build_streaming(self, device: torch.device, dtype: torch.dtype) -> None:
        """One gather index over the 14 stacked populations (9 flow, 5 temperature) doing streaming and both walls.

        Population ``q`` arriving at node ``(i, j)`` comes from ``(i − c_z, j − c_x)`` (x periodic); if that source lies
        beyond a plate, it is the node's own post-collision opposite population (half-way bounce-back), negated and
        shifted by ``2 w_q T_wall`` for the temperature (anti-bounce-back)."""
        h, w = self.h, self.w
        n = h * w
        i = torch.arange(h).view(h, 1).expand(h, w)
        j = torch.arange(w).view(1, w).expand(h, w)
        index, sign, shift = [], [], []  # sign and shift: the temperature populations' wall terms
        for lattice, qn, weights in (("f", 9, _W9), ("g", 5, _W5)):
            base = 0 if lattice == "f" else 9 * n
            for q in range(qn):
                cx, cz = _C[q]
                si, sj = i - cz, (j - cx) % w
                outside = (si < 0) | (si >= h)
                src = base + q * n + si.clamp(0, h - 1) * w + sj
                wall = base + _OPP[q] * n + i * w + j
                index.append(torch.where(outside, wall, src))
                if lattice == "g":
                    t_wall = (si < 0).double()  # bottom plate hot (1), top plate cold (0)
                    sign.append(1 - 2 * outside.double())
                    shift.append(outside.double() * 2 * weights[q] * t_wall)
        self.index = torch.stack(index).reshape(1, -1).to(device)
        self.sign = torch.stack(sign).reshape(1, 5, h, w).to(device=device, dtype=dtype)
        self.shift = torch.stack(shift).reshape(1, 5, h, w).to(device=device, dtype=dtype)

    def macroscopic(self, fg: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Density, velocity (with half the force, Guo), temperature and buoyancy, each (B, 1, H, W)."""
        f, g = fg[:, :9], fg[:, 9:]
        # Plain sums, not einsum: a BLAS call per step is slower for these small arrays and spins threads.
        rho = f.sum(1, keepdim=True)
        jx = (f[:, 1:2] + f[:, 5:6] + f[:, 8:9]) - (f[:, 3:4] + f[:, 6:7] + f[:, 7:8])
        jz = (f[:, 2:3] + f[:, 5:6] + f[:, 6:7]) - (f[:, 4:5] + f[:, 7:8] + f[:, 8:9])
        temp = g.sum(1, keepdim=True)
        force = self.buoyancy * (temp - self.t_conduction)
        ux = jx / rho
        uz = (jz + 0.5 * force) / rho
        return rho, ux, uz, temp, force

    def step(self, fg: torch.Tensor) -> torch.Tensor:
        """One LBM step of the stacked populations ``fg (B, 14, H, W)``: collision, then streaming with the walls."""
        rho, ux, uz, temp, force = self.macroscopic(fg)
        f, g = fg[:, :9], fg[:, 9:]
        cu = self.cx * ux + self.cz * uz
        usq = ux * ux + uz * uz
        feq = self.w9 * rho * (1 + 3 * cu + 4.5 * cu * cu - 1.5 * usq)
        source = (1 - 0.5 / self.tau_f) * self.w9 * force * (3 * (self.cz - uz) + 9 * cu * self.cz)
        geq = self.w5 * temp * (1 + 3 * cu[:, :5])
        post = torch.empty_like(fg)
        torch.add(f, (feq - f) / self.tau_f + source, out=post[:, :9])
        torch.add(g, (geq - g) / self.tau_t, out=post[:, 9:])
        b = fg.shape[0]
        streamed = torch.gather(post.view(b, -1), 1, self.index.expand(b, -1)).view_as(fg)
        streamed[:, 9:].mul_(self.sign).add_(self.shift)
        return streamed

    def initial(self, temperature: torch.Tensor) -> torch.Tensor:
        """Stacked equilibria at rest, density 1, for ``temperature (B, H, W)``."""
        b = temperature.shape[0]
        f = self.w9.expand(b, 9, self.h, self.w)
        g = self.w5 * temperature[:, None]
        return torch.cat((f, g), 1)

    def observe(self, fg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Temperature (B, H, W), velocity (B, 2, H, W) in free-fall units, Nusselt number (B,) float64."""
        _, ux, uz, temp, _ = self.macroscopic(fg)
        vel = torch.cat((ux, uz), 1) / self.u_ff.to(ux.dtype).view(-1, 1, 1, 1)
        flux = (uz * temp).double().mean((1, 2, 3))
        nusselt = 1 + flux * self.h / self.kappa
        return temp[:, 0], vel, nusselt


def _conduction(h: int, w: int, device, dtype) -> torch.Tensor:
    z = (torch.arange(h, device=device, dtype=torch.float64) + 0.5) / h
    return (1 - z).view(h, 1).expand(h, w).to(dtype)


def _noise(seeds: list[int], h: int, w: int, amplitude: float, device, dtype) -> torch.Tensor:
    """Seeded white noise times sin(πz) (zero at the plates), ``numpy.random.default_rng([seed, h, w])`` per run."""
    z = (np.arange(h) + 0.5) / h
    fields = [np.random.default_rng([s, h, w]).standard_normal((h, w)) * np.sin(np.pi * z)[:, None] for s in seeds]
    return torch.from_numpy(amplitude * np.stack(fields)).to(device=device, dtype=dtype)


def iter_records(
    rayleigh: float | Sequence[float],
    prandtl: float = 0.71,
    height: int = 32,
    aspect: float = 2.0,
    *,
    t_final: float,
    dt_save: float,
    t_start: float = 0.0,
    seed: int | Sequence[int] = 0,
    noise: float = 1e-2,
    initial_temperature: torch.Tensor | None = None,
    refine: int = 1,
    max_lattice_velocity: float = 0.1,
    device=None,
    dtype: torch.dtype = torch.float32,
    on_interval: Callable[[int], None] | None = None,
) -> Iterator[tuple[float, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield ``(time, temperature (B, H, W), velocity (B, 2, H, W), nusselt (B,))`` at each record time.

    Records are at ``t_start + k·dt_save`` up to ``t_final`` (``t_start`` itself excluded): the run before
    ``t_start`` is spin-up. Arguments as in ``simulate``; memory stays at one record, for long series.
    ``on_interval(1)`` is called after every record interval, spin-up included (for progress bars).
    """
    ras, _ = _as_list(rayleigh, "rayleigh")
    seeds, _ = _as_list(seed, "seed")
    if len(ras) > 1 and len(seeds) > 1 and len(ras) != len(seeds):
        raise ValueError(f"rayleigh and seed lists must have the same length, got {len(ras)} and {len(seeds)}")
    n = max(len(ras), len(seeds))
    ras = [positive(r, "rayleigh") for r in (ras * n if len(ras) == 1 else ras)]
    seeds = [_seed(s) for s in (seeds * n if len(seeds) == 1 else seeds)]
    prandtl = positive(prandtl, "prandtl")
    height = positive(height, "height", integer=True)
    refine = positive(refine, "refine", integer=True)
    aspect = positive(aspect, "aspect")
    dt_save = positive(dt_save, "dt_save")
    t_final = positive(t_final, "t_final")
    if not isinstance(t_start, numbers.Real) or not 0 <= t_start < t_final:
        raise ValueError(f"t_start must be in [0, t_final={t_final}), got {t_start!r}")
    if not 0 < max_lattice_velocity <= 0.3:
        raise ValueError(f"max_lattice_velocity must be in (0, 0.3] (low Mach number), got {max_lattice_velocity!r}")
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real) or not (noise >= 0 and math.isfinite(noise)):
        raise ValueError(f"noise must be a non-negative number, got {noise!r}")
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    width = round(aspect * height)
    if width < 2 or abs(width - aspect * height) > 1e-6:
        raise ValueError(f"aspect × height must be a whole number of cells >= 2, got {aspect} × {height}")
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")

    hs, ws = height * refine, width * refine
    params = [lattice_parameters(ra, prandtl, hs, dt_save, max_lattice_velocity) for ra in ras]
    for ra, p in zip(ras, params):
        check_resolution(ra, p)
    lat = _Lattice(params, ws, dev, dtype)
    if initial_temperature is None:
        temp0 = _conduction(hs, ws, dev, dtype).expand(n, hs, ws) + _noise(seeds, hs, ws, float(noise), dev, dtype)
    else:
        if not isinstance(initial_temperature, torch.Tensor) or tuple(initial_temperature.shape[-2:]) != (hs, ws):
            raise ValueError(f"initial_temperature must be a tensor of shape (H, W) or (B, H, W) = (…, {hs}, {ws})")
        temp0 = initial_temperature.to(device=dev, dtype=dtype).expand(n, hs, ws)
    fg = lat.initial(temp0)

    steps = params[0].steps_per_record
    n_skip = round(t_start / dt_save)
    n_records = round((t_final - t_start) / dt_save)
    if (
        abs(n_skip * dt_save - t_start) > 1e-6 * dt_save
        or abs((n_skip + n_records) * dt_save - t_final) > 1e-6 * t_final
    ):
        raise ValueError(f"t_start={t_start} and t_final={t_final} must be multiples of dt_save={dt_save}")
    with torch.no_grad():
        for k in range(1, n_skip + n_records + 1):
            for _ in range(steps):
                fg = lat.step(fg)
            if on_interval is not None:
                on_interval(1)
            if k <= n_skip and k % 16:
                continue
            temp, vel, nu = lat.observe(fg)
            if not bool(torch.isfinite(nu).all()):
                raise FloatingPointError(
                    f"the LBM run became unstable before t={k * dt_save:g} (Ra={ras}, {hs} cells): use a larger "
                    "height/refine or a smaller max_lattice_velocity"
                )
            if k > n_skip:
                if refine > 1:
                    temp = torch.nn.functional.avg_pool2d(temp[:, None], refine)[:, 0]
                    vel = torch.nn.functional.avg_pool2d(vel, refine)
                yield k * dt_save, temp, vel, nu


def simulate(
    rayleigh: float | Sequence[float],
    prandtl: float = 0.71,
    height: int = 32,
    aspect: float = 2.0,
    *,
    t_final: float,
    dt_save: float,
    t_start: float = 0.0,
    seed: int | Sequence[int] = 0,
    noise: float = 1e-2,
    initial_temperature: torch.Tensor | None = None,
    refine: int = 1,
    max_lattice_velocity: float = 0.1,
    device=None,
    dtype: torch.dtype = torch.float32,
    on_record: Callable[[int], None] | None = None,
) -> RBCResult:
    """Run 2-D Rayleigh–Bénard convection and return its records (see the module docstring for the model).

    The grid is ``height × round(aspect·height)`` cells (row 0 at the hot bottom plate); ``refine`` solves on a grid
    ``refine`` times finer in both directions and block-averages the fields (the Nusselt number comes from the fine
    grid). Records at ``t_start + k·dt_save ≤ t_final`` (free-fall units). The initial state is the conduction profile
    ``T = 1 − z`` at rest plus ``noise × sin(πz) × N(0, 1)`` drawn from ``seed``, or ``initial_temperature`` on the
    solver grid. Several Rayleigh numbers and/or seeds run as one batch (a leading dimension in the result).
    ``device=None`` uses CUDA when available. ``on_record(k)`` is called after record ``k`` (1-based).
    """
    batched = _as_list(rayleigh, "rayleigh")[1] or _as_list(seed, "seed")[1]
    temps, vels, nus, times = [], [], [], []
    for k, (t, temp, vel, nu) in enumerate(
        iter_records(
            rayleigh,
            prandtl,
            height,
            aspect,
            t_final=t_final,
            dt_save=dt_save,
            t_start=t_start,
            seed=seed,
            noise=noise,
            initial_temperature=initial_temperature,
            refine=refine,
            max_lattice_velocity=max_lattice_velocity,
            device=device,
            dtype=dtype,
        ),
        start=1,
    ):
        temps.append(temp)
        vels.append(vel)
        nus.append(nu)
        times.append(t)
        if on_record is not None:
            on_record(k)
    temperature, velocity, nusselt = torch.stack(temps, 1), torch.stack(vels, 1), torch.stack(nus, 1)
    if not batched:
        temperature, velocity, nusselt = temperature[0], velocity[0], nusselt[0]
    ras = [float(r) for r in _as_list(rayleigh, "rayleigh")[0]]
    return RBCResult(
        temperature=temperature,
        velocity=velocity,
        nusselt=nusselt,
        time=torch.tensor(times, dtype=torch.float64),
        rayleigh=ras if batched else ras[0],
        prandtl=float(prandtl),
    )
