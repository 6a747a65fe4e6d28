"""``sdkd train``, ``sdkd distill`` and ``sdkd eval``.

Configs are YAML files (``--config``, repeatable, later files win; a packaged config by name, ``nse/teacher``,
from any folder) plus ``section.key=value`` overrides; ``configs/`` holds one per dataset and stage.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .config import build_config


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        help="YAML file, or a packaged config's name from any folder (nse/teacher; `sdkd configs` lists them); "
        "repeatable, later ones win",
    )
    parser.add_argument("--resume", action="store_true", help="continue from OUT_DIR/last.pt")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the run in OUT_DIR (only its last.pt, best.pt, metrics.*)"
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.lr=3e-4")


# ----------------------------------------------------------------------------- train
def configure_train(parser: argparse.ArgumentParser) -> None:
    _common(parser)


def run_train(args: argparse.Namespace, stage: str = "train") -> int:
    from .distributed import is_main_process
    from .run import run_stage

    cfg = build_config(args.config, [f"stage={stage}", *args.overrides, *getattr(args, "extra", [])])
    if not args.config and not args.overrides and is_main_process():  # a bare command: say what it trains
        d = cfg["data"]
        print(
            f"sdkd {stage}: no --config: the built-in defaults (model {cfg['model']['name']}, data {d['name']}"
            f"{'/' + str(d['preset']) if d['name'] == 'ns' else ''}, {cfg['train']['epochs']} epochs) into "
            f"{cfg['out_dir']}; `sdkd configs` lists the paper's settings",
            file=sys.stderr,
        )
    if is_main_process():  # where to look while it runs (metrics.csv, checkpoints)
        print(
            f"sdkd {stage}: output folder {Path(cfg['out_dir']).resolve()}", flush=True
        )  # stdout: stderr is for errors
    res = run_stage(cfg, resume=args.resume, device=args.device, overwrite=args.overwrite)
    if is_main_process():  # under torchrun, one summary line, not one per rank
        print(f"best val MSE {res.best_val:.5g} at epoch {res.best_epoch + 1}; checkpoint {res.best_path}")
    return 0


# ----------------------------------------------------------------------------- distill
def configure_distill(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", action="append", default=[], help="teacher checkpoint (repeat for several)")
    _common(parser)


def run_distill(args: argparse.Namespace) -> int:
    if args.teacher:
        args.extra = [f"distill.teachers={json.dumps(args.teacher)}"]
    return run_train(args, stage="distill")


# ----------------------------------------------------------------------------- eval
def configure_eval(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        action="append",
        required=True,
        help="checkpoint to evaluate (repeat it for several, one row each)",
    )
    parser.add_argument(
        "--name", action="append", default=[], help="row name, repeated in --checkpoint order (default: the file path)"
    )
    parser.add_argument("--out", default=None, help="folder for results.md/.json and figures")
    parser.add_argument("--figures", action="store_true", help="write figures (needs matplotlib: sdkd[plot])")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1: where the models run")
    parser.add_argument(
        "--openstl-metrics",
        action="store_true",
        help="also MSE/MAE in OpenSTL's convention (per frame, sum over C, H, W; mean over samples and frames)",
    )
    parser.add_argument("overrides", nargs="*", help="data.* overrides (default: the first checkpoint's data config)")


def run_eval(args: argparse.Namespace) -> int:
    from .evaluate import COLUMNS, OPENSTL_COLUMNS, evaluate, format_table, target_range
    from .progress import progress_enabled
    from .run import build_datasets, load_model

    if args.out:  # before any model is evaluated
        from sdkd.outputs import check_writable_dir

        check_writable_dir(args.out, "--out")
    models = [load_model(p, args.device) for p in args.checkpoint]
    base = models[0][1]["config"]
    cfg = build_config([], [f"data.{k}={json.dumps(v)}" for k, v in base["data"].items()] + args.overrides)
    test = build_datasets(cfg["data"], cfg["seed"])["test"]
    names = args.name + [str(p) for p in args.checkpoint[len(args.name) :]]
    R = target_range(test)
    openstl = args.openstl_metrics
    show = progress_enabled()
    rows = {
        n: evaluate(
            m, test, device=args.device, data_range=R, openstl=openstl, name=n, progress=show, desc=f"test: {n}"
        )
        for n, (m, _) in zip(names, models)
    }
    table = format_table(rows, COLUMNS + OPENSTL_COLUMNS if openstl else COLUMNS)
    print(table)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.md").write_text(table + "\n")
        (out / "results.json").write_text(json.dumps(rows, indent=2))
        if args.figures:
            from .figures import write_figures

            for path in write_figures({n: m for n, (m, _) in zip(names, models)}, test, out):
                print(f"wrote {path}")
    return 0


# CLI entry points (sdkd.cli maps subcommands to configure/run of a module).
class _Command:
    def __init__(self, configure, run):
        self.configure, self.run = configure, run


train = _Command(configure_train, run_train)
distill = _Command(configure_distill, run_distill)
eval_ = _Command(configure_eval, run_eval)
