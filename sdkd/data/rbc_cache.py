"""The RBC data set: one long temperature series from ``sdkd.data.rbc``, generated once and cached on disk.

Layout: ``(frames, 1, H, W)`` float32 temperature (row 0 at the hot bottom plate), frames ``dt_save`` free-fall times
apart after a discarded spin-up. One long statistically stationary series, split in time into contiguous train / val /
test blocks (``PRESET_SPLITS``, in frames) so that no window of one split overlaps another — the paper's counts
(Table 2: 35,718 / 4,465 / 4,465 windows of 13 → 12 frames) come out exactly with stride-1 sliding windows.
The Nusselt series ``Nu(t)`` of the stored frames is recorded in the metadata file, for the figure.

Presets (``PRESETS``):

- ``paper``: 32 × 480 (aspect 15), Ra = 10⁶, Pr = 0.71, frames every 0.25 free-fall times, 44,720 frames after 100
  free-fall times of spin-up. Pr = 0.71 is air, the usual choice of the lattice Boltzmann RBC studies the paper's source
  follows (Shan 1997; He, Chen & Doolen 1998). Ra = 10⁶ is inside the "soft turbulence" range of Heslot, Castaing &
  Libchaber (1987, 5×10⁵ < Ra < 4×10⁷): chaotic, plume-dominated 2-D convection, not steady or periodic rolls. It is
  the largest Ra the 2× finer solver grid (64 × 960) resolves: with Nu ≈ 9 the thermal boundary layers are H/(2 Nu) ≈ 3.5
  solver cells thick, and the BGK relaxation times (0.516, 0.523) stay clear of the ½ stability limit. (Checked on a
  box of aspect 4 at the same resolution, 60 free-fall times on a CPU: stable, Nu(t) between 4 and 13 around 9.) Higher Ra
  would need a finer solver grid (cost ∝ refine³). GPU territory: 7.2 M lattice steps on 61k cells.
- ``small``: the same Ra and Pr on 16 × 64, solved at 32 × 128, 300 frames every 0.5 free-fall times after 40 of
  spin-up — under a minute of CPU time. Its boundary layers are only about 2 solver cells thick, and the coarse
  grid settles into oscillating rolls (Nu(t) periodic around 8.4, period ≈ 5) instead of ``paper``'s chaotic
  plumes: data for demos and CPU runs, not for physics.
- ``tiny``: 8 × 32, Ra = 2×10⁴, 120 frames — seconds; steady rolls after the spin-up, for
  ``sdkd reproduce rbc --budget smoke`` and tests only.
"""

from __future__ import annotations

import math
import numbers
import time
from pathlib import Path

import numpy as np
import torch

from . import rbc
from ._params import merge_preset, positive

__all__ = ["PRESETS", "PRESET_SPLITS", "cache_params", "cached_dataset", "load_or_generate", "write_figure"]

PRESETS: dict[str, dict] = {
    "tiny": dict(rayleigh=2e4, height=8, aspect=4.0, refine=1, dt_save=0.5, spinup=20.0, frames=120),
    "small": dict(rayleigh=1e6, height=16, aspect=4.0, refine=2, dt_save=0.5, spinup=40.0, frames=300),
    "paper": dict(rayleigh=1e6, height=32, aspect=15.0, refine=2, dt_save=0.25, spinup=100.0, frames=44_720),
}
# Contiguous (train, val, test) frame counts: 13 -> 12 windows number frames - 24 per split (paper: 35,718 / 4,465 / 4,465).
PRESET_SPLITS: dict[str, tuple[int, int, int]] = {
    "tiny": (60, 30, 30),
    "small": (210, 45, 45),
    "paper": (35_742, 4_489, 4_489),
}
_DEFAULTS = dict(
    rayleigh=None,
    prandtl=0.71,
    height=None,
    aspect=2.0,
    refine=1,
    dt_save=None,
    spinup=0.0,
    frames=None,
    seed=0,
    noise=1e-2,
    max_lattice_velocity=0.1,
)
CACHE_FORMAT = "sdkd.rbc/1"


def cache_params(preset: str | None = "small", **overrides) -> dict:
    """The full generator parameters of ``preset`` with ``overrides`` (``None`` = unset), checked."""
    params = merge_preset(_DEFAULTS, PRESETS, preset, overrides)
    missing = [k for k in ("rayleigh", "height", "dt_save", "frames") if params[k] is None]
    if missing:
        raise ValueError(f"{', '.join(missing)} must be given (or a preset chosen)")
    for name in ("rayleigh", "prandtl", "aspect", "dt_save", "max_lattice_velocity"):
        params[name] = positive(params[name], name)
    for name in ("height", "refine", "frames"):
        params[name] = positive(params[name], name, integer=True)
    spinup = params["spinup"]
    if isinstance(spinup, bool) or not isinstance(spinup, numbers.Real) or not (0 <= spinup < math.inf):
        raise ValueError(f"spinup must be a non-negative number, got {spinup!r}")
    if abs(round(spinup / params["dt_save"]) * params["dt_save"] - spinup) > 1e-9 * max(1.0, spinup):
        raise ValueError(f"spinup={spinup} must be a multiple of dt_save={params['dt_save']}")
    params["spinup"] = float(spinup)
    params["seed"] = rbc._seed(params["seed"])
    params["noise"] = float(params["noise"])
    width = params["aspect"] * params["height"]
    if abs(width - round(width)) > 1e-6:
        raise ValueError(
            f"aspect × height must be a whole number of cells, got {params['aspect']} × {params['height']}"
        )
    lattice = rbc.lattice_parameters(
        params["rayleigh"],
        params["prandtl"],
        params["height"] * params["refine"],
        params["dt_save"],
        params["max_lattice_velocity"],
    )
    rbc.check_resolution(params["rayleigh"], lattice)
    return params


def _default_device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="rayleigh-benard", unit="rec")


def cached_dataset(
    params: dict, *, root=None, device=None, progress: bool = True, force: bool = False
) -> tuple[np.ndarray, Path, bool]:
    """The cached series ``(frames, 1, H, W)`` (read-only memory map), its ``.npy`` path and whether it was reused.

    ``params`` from ``cache_params``. ``root`` defaults to ``$SDKD_DATA_DIR`` or ``~/.cache/sdkd``; files live in
    ``<root>/rbc/``, reused only if the metadata (all parameters, format, sdkd version) matches and the file is complete;
    written atomically (``sdkd.data.cache``), frame by frame into the temporary memory map.
    """
    import sdkd
    from sdkd.data import cache

    h, w = params["height"], round(params["aspect"] * params["height"])
    folder = (cache.default_root() if root is None else Path(root).expanduser()) / "rbc"
    stem = folder / f"rbc_ra{params['rayleigh']:g}_{h}x{w}_f{params['frames']}_{cache.params_key(params)}"
    shape = (params["frames"], 1, h, w)
    match = {"format": CACHE_FORMAT, "params": params, "sdkd_version": sdkd.__version__}

    def fill(out: np.ndarray) -> dict:
        t0 = time.perf_counter()
        dev = _default_device(device)
        spin = round(params["spinup"] / params["dt_save"])
        bar = _progress_bar(spin + params["frames"], progress)
        nusselt = []
        try:
            records = rbc.iter_records(
                params["rayleigh"],
                params["prandtl"],
                h,
                params["aspect"],
                t_start=params["spinup"],
                t_final=params["spinup"] + params["frames"] * params["dt_save"],
                dt_save=params["dt_save"],
                seed=params["seed"],
                noise=params["noise"],
                refine=params["refine"],
                max_lattice_velocity=params["max_lattice_velocity"],
                device=dev,
                on_interval=None if bar is None else bar.update,
            )
            for k, (_, temp, _, nu) in enumerate(records):
                out[k, 0] = temp[0].cpu().numpy()
                nusselt.append(float(nu[0]))
        finally:
            if bar is not None:
                bar.close()
        lat = rbc.lattice_parameters(
            params["rayleigh"],
            params["prandtl"],
            h * params["refine"],
            params["dt_save"],
            params["max_lattice_velocity"],
        )
        return {
            "device": str(dev),
            "elapsed_s": round(time.perf_counter() - t0, 3),
            "torch_version": torch.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "layout": "(frames, 1, H, W) temperature, row 0 at the hot bottom plate; frame k at spinup + (k+1)*dt_save",
            "scheme": "double-distribution lattice Boltzmann (D2Q9 BGK + Guo forcing, D2Q5 BGK), sdkd.data.rbc",
            "lattice": {k: getattr(lat, k) for k in ("height", "steps_per_record", "u_ff", "tau_f", "tau_t")},
            "nusselt": [round(v, 5) for v in nusselt],
            "nusselt_mean": round(float(np.mean(nusselt)), 5),
        }

    return cache.cached_array(stem, match, shape, np.float32, fill, force=force)


def load_or_generate(
    preset: str | None = "small", *, root=None, device=None, progress: bool = True, force: bool = False, **overrides
) -> tuple[np.ndarray, Path]:
    """The cached RBC series ``(frames, 1, H, W)`` of ``preset`` (overridden by ``overrides``) and its path."""
    array, path, _ = cached_dataset(
        cache_params(preset, **overrides), root=root, device=device, progress=progress, force=force
    )
    return array, path


# ------------------------------------------------------------------------------------------------------------ figure
def write_figure(data_path: str | Path, out: str | Path, snapshots: int = 4) -> Path:
    """Temperature snapshots (evenly spaced over the series) and ``Nu(t)`` of a cached RBC series, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sdkd.data import cache

    data_path, out = Path(data_path), Path(out)
    meta = cache.read_json(data_path.with_suffix(".json")) or {}
    params = meta.get("params", {})
    array = np.load(data_path, mmap_mode="r")
    n = array.shape[0]
    dt, t0 = float(params.get("dt_save", 1.0)), float(params.get("spinup", 0.0))
    times = t0 + dt * (np.arange(n) + 1)
    picks = np.linspace(0, n - 1, snapshots).round().astype(int)
    h, w = array.shape[-2:]
    panel_h = max(0.8, 7.0 * h / w)
    fig = plt.figure(figsize=(10, snapshots * panel_h + 3.2), layout="constrained")
    grid = fig.add_gridspec(snapshots + 1, 1, height_ratios=[panel_h] * snapshots + [2.2])
    panels = []
    for row, k in enumerate(picks):
        ax = fig.add_subplot(grid[row])
        panels.append(ax)
        im = ax.imshow(array[k, 0], origin="lower", cmap="RdBu_r", vmin=0, vmax=1, aspect="equal")
        ax.set_ylabel(f"t = {times[k]:.4g}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=panels, fraction=0.02, pad=0.01, label="temperature")
    ax = fig.add_subplot(grid[snapshots])
    nusselt = meta.get("nusselt")
    if nusselt:
        ax.plot(times[: len(nusselt)], nusselt, lw=0.8)
        ax.axhline(float(np.mean(nusselt)), color="k", ls="--", lw=0.7, label=f"mean {np.mean(nusselt):.3f}")
        ax.legend(fontsize=8, loc="upper right")
    ax.set(xlabel="time (free-fall units)", ylabel="Nu")
    ra, pr = params.get("rayleigh"), params.get("prandtl")
    fig.suptitle(f"Rayleigh–Bénard convection, Ra = {ra:g}, Pr = {pr:g}, {h} × {w}" if ra else data_path.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
