"""``sdkd data``: generate (and cache) or inspect datasets.

``sdkd data ns --preset small`` builds the demo Navier–Stokes set; ``sdkd data ns --n N --resolution R --out DIR``
any other. ``sdkd data rbc --preset small|paper [--figure]`` builds a Rayleigh–Bénard temperature series (and draws
it). Explicit flags override the preset. ``sdkd data inspect FILE.npy`` prints a cached array's metadata and
statistics.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

# sdkd.data.navier_stokes.PRESETS' names, spelled out so `sdkd data --help` does not import torch (a test checks)
PRESET_NAMES = ["tiny", "small", "fno"]


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="DATASET")

    ns_help = "2-D Navier-Stokes vorticity (FNO's setting), cached on disk"
    ns = sub.add_parser(
        "ns",
        help=ns_help,
        description=f"{ns_help}: generated once per parameter set and reused (`--force` regenerates). A preset "
        "names a parameter set; the flags override single parameters.",
    )
    ns.add_argument(
        "--preset",
        choices=PRESET_NAMES,
        help="named parameter set (flags below override it): tiny (20 x 16x16, seconds; tests), small (120 x 32x32, "
        "about a minute on 2 CPU cores; the demo's), fno (1200 x 64x64 at nu=1e-5, FNO's set; GPU advised)",
    )
    ns.add_argument("--n", type=int, help="number of trajectories")
    ns.add_argument("--resolution", type=int, help="grid size R of the stored R x R fields (default 64)")
    ns.add_argument("--visc", type=float, help="viscosity nu (default 1e-5)")
    ns.add_argument("--t-final", type=float, help="final time (default 20)")
    ns.add_argument("--record-steps", type=int, help="number of stored frames, evenly spaced in (0, t_final]")
    ns.add_argument("--dt", type=float, help="largest time step (default: chosen for stability)")
    ns.add_argument("--forcing", choices=["fno", "none"], help="forcing term (default fno)")
    ns.add_argument("--solver-resolution", type=int, help="solve on a finer grid and subsample (multiple of R)")
    ns.add_argument("--seed", type=int, help="random seed of the initial fields (default 0)")
    ns.add_argument("--out", type=Path, help="data folder (default $SDKD_DATA_DIR or ~/.cache/sdkd)")
    ns.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    ns.add_argument("--chunk-size", type=int, help="samples solved at once (default: from a memory budget)")
    ns.add_argument("--force", action="store_true", help="regenerate even if a matching cache exists")
    ns.add_argument("--no-progress", action="store_true", help="no progress bar")

    rb_help = "2-D Rayleigh-Benard convection temperature series (lattice Boltzmann), cached"
    rb = sub.add_parser("rbc", help=rb_help, description=f"{rb_help}: generated once per parameter set and reused.")
    rb.add_argument(
        "--preset", default="small", choices=["tiny", "small", "paper"], help="parameter set (default small)"
    )
    rb.add_argument("--rayleigh", type=float, help="Rayleigh number Ra")
    rb.add_argument("--prandtl", type=float, help="Prandtl number Pr (default 0.71)")
    rb.add_argument("--height", type=int, help="stored grid height H in cells (width = aspect x H)")
    rb.add_argument("--aspect", type=float, help="width / height of the periodic box")
    rb.add_argument("--refine", type=int, help="solve on a grid this many times finer, then block-average")
    rb.add_argument("--dt-save", type=float, help="free-fall times between stored frames")
    rb.add_argument("--spinup", type=float, help="free-fall times simulated before the first stored frame")
    rb.add_argument("--frames", type=int, help="number of stored frames")
    rb.add_argument("--seed", type=int, help="random seed of the initial perturbation (default 0)")
    rb.add_argument("--out", type=Path, help="data folder (default $SDKD_DATA_DIR or ~/.cache/sdkd)")
    rb.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    rb.add_argument("--force", action="store_true", help="regenerate even if a matching cache exists")
    rb.add_argument("--no-progress", action="store_true", help="no progress bar")
    rb.add_argument(
        "--figure",
        nargs="?",
        const="",
        metavar="PNG",
        help="also draw temperature snapshots and Nu(t) (default file: next to the data, <name>.png)",
    )

    ins_help = "print the metadata and statistics of a cached .npy array"
    ins = sub.add_parser("inspect", help=ins_help, description=ins_help)
    ins.add_argument("path", type=Path, help="a .npy file written by `sdkd data`")

    parser.set_defaults(_data_parser=parser)


def _run_ns(args: argparse.Namespace) -> int:
    from sdkd.data import navier_stokes as ns

    try:
        params = ns.cache_params(
            args.preset,
            n=args.n,
            resolution=args.resolution,
            visc=args.visc,
            t_final=args.t_final,
            record_steps=args.record_steps,
            seed=args.seed,
            dt=args.dt,
            forcing=args.forcing,
            solver_resolution=args.solver_resolution,
        )
    except (TypeError, ValueError) as exc:
        args._data_parser.error(str(exc))
    t0 = time.perf_counter()
    array, path, reused = ns.cached_dataset(
        params,
        root=args.out,
        device=args.device,
        chunk_size=args.chunk_size,
        progress=not args.no_progress,
        force=args.force,
    )
    what = "reused cache" if reused else f"generated in {time.perf_counter() - t0:.1f} s"
    print(f"{path}  shape={tuple(array.shape)} dtype={array.dtype}  ({what})")
    return 0


def _run_rbc(args: argparse.Namespace) -> int:
    from sdkd.data import rbc_cache

    try:
        params = rbc_cache.cache_params(
            args.preset,
            rayleigh=args.rayleigh,
            prandtl=args.prandtl,
            height=args.height,
            aspect=args.aspect,
            refine=args.refine,
            dt_save=args.dt_save,
            spinup=args.spinup,
            frames=args.frames,
            seed=args.seed,
        )
    except (TypeError, ValueError) as exc:
        args._data_parser.error(str(exc))
    figure = None
    if args.figure is not None:
        figure = Path(args.figure) if args.figure else None
        if figure is not None and figure.exists() and not args.force:
            args._data_parser.error(f"--figure {figure} exists; choose another file or pass --force to replace it")
    t0 = time.perf_counter()
    array, path, reused = rbc_cache.cached_dataset(
        params, root=args.out, device=args.device, progress=not args.no_progress, force=args.force
    )
    what = "reused cache" if reused else f"generated in {time.perf_counter() - t0:.1f} s"
    print(f"{path}  shape={tuple(array.shape)} dtype={array.dtype}  ({what})")
    if args.figure is not None:
        try:
            written = rbc_cache.write_figure(path, figure or path.with_suffix(".png"))
        except ImportError as exc:
            from sdkd._optional import import_error_message

            print(f"figure skipped: {import_error_message(exc)}")
            return 1
        print(f"wrote {written}")
    return 0


def _run_inspect(args: argparse.Namespace) -> int:
    import numpy as np

    from sdkd.data import cache

    path: Path = args.path
    if not cache.npy_is_complete(path):
        print(f"{path}: missing or incomplete .npy file")
        return 1
    meta = cache.read_json(path.with_suffix(".json"))
    print(json.dumps(meta, indent=2, sort_keys=True) if meta is not None else f"{path}: no metadata file")
    if meta is not None and "sha256" in meta:
        ok = cache.file_digest(path) == meta["sha256"]
        print(f"sha256: {'ok' if ok else 'MISMATCH: the file was damaged; sdkd regenerates it on next use'}")
    array = np.load(path, mmap_mode="r")
    sample = np.asarray(array[: min(len(array), 64)], dtype=np.float64)
    print(f"shape={tuple(array.shape)} dtype={array.dtype}")
    print(
        f"first {len(sample)} samples: mean={sample.mean():.4g} std={sample.std():.4g} min={sample.min():.4g} max={sample.max():.4g}"
    )
    return 0


def run(args: argparse.Namespace) -> int:
    if args.data_command == "ns":
        return _run_ns(args)
    if args.data_command == "rbc":
        return _run_rbc(args)
    if args.data_command == "inspect":
        return _run_inspect(args)
    args._data_parser.print_help()
    return 0
