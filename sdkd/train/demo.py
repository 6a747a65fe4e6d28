"""``sdkd demo``: the paper's pipeline end to end on generated Navier–Stokes data.

Generates a small NSE set, trains an ST-AlterNet teacher, a U-Net student alone (baseline)
and a U-Net distilled from the teacher with SpectralKD, then prints one table (test MSE,
MAE, PSNR, SSIM, low/high band error, parameters, latency) and writes figures. Finished
stages are reused when run again with the same settings; interrupted ones resume. Progress: bars
within each epoch, the teacher cache build and the evaluation (on a terminal), and after each
epoch a stage/ETA line (``sdkd.train.progress.StageProgress``).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

from .config import build_config
from .interrupt import stopped_in
from .progress import StageProgress, progress_enabled

# The SpectralKD setting the demo distills with (see README, "Choosing SpectralKD's setting").
# Chosen from a comparison on the small NSE preset over seeds 42-44 (README, "Demo results"):
# emphasising the low band (alpha=2) beat plain output MSE (alpha=1) on every seed; "adaptive"
# weighting (relative band errors) hurt badly here, because the flow's weak high band got huge weight.
DEMO_KD = {"type": "spectral", "cutoffs": 0.25, "alpha": 2.0, "reduction": "mean", "weighting": "fixed"}

BUDGETS: dict[str, dict[str, Any]] = {
    # about 1 minute on 2 idle CPU cores (62 s measured), data generation included.
    "small": {
        "preset": "small",
        "teacher": {"hid_S": 16, "hid_T": 128, "N_S": 4, "N_T": 4, "num_heads": 4},  # 1.18 M params
        # 0.12 M params (10 % of the teacher); 3 levels train faster here than 4 narrower ones
        # (seed 42: test MSE 0.023 alone, 0.015 distilled; widths [10, 20, 40, 80], 0.19 M: 0.096 / 0.052)
        "student": {"widths": [16, 32, 64]},
        "teacher_epochs": 30,
        "student_epochs": 30,
        "batch_size": 8,
        "lr": 1e-3,
        "lam": 3.0,
    },
    # Seconds: the whole pipeline on a tiny data set (for tests; the numbers mean nothing).
    "smoke": {
        "preset": "tiny",
        "teacher": {"hid_S": 8, "hid_T": 32, "N_S": 2, "N_T": 1, "num_heads": 2},  # 25 k params
        "student": {"widths": [4, 8]},  # 2 k params
        "teacher_epochs": 2,
        "student_epochs": 2,
        "batch_size": 4,
        "lr": 1e-3,
        "lam": 1.0,
    },
    # About 3x longer: a bigger teacher and more epochs.
    "medium": {
        "preset": "small",
        "teacher": {"hid_S": 32, "hid_T": 192, "N_S": 4, "N_T": 6, "num_heads": 6},  # 3.96 M params
        "student": {"widths": [16, 32, 64, 128]},  # 0.48 M params
        "teacher_epochs": 80,
        "student_epochs": 80,
        "batch_size": 8,
        "lr": 1e-3,
        "lam": 3.0,
    },
}


def stage_configs(budget: str, out: Path, seed: int, kd: dict | None = None) -> dict[str, dict]:
    """The three configs (teacher, baseline, distilled) of a demo budget."""
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; choose from {sorted(BUDGETS)}")
    b = BUDGETS[budget]
    common = {
        "seed": seed,
        "data": {"name": "ns", "preset": b["preset"], "batch_size": b["batch_size"]},
        "train": {"lr": b["lr"], "scheduler": "cosine", "patience": 0},
    }
    teacher = _merge(common, {"out_dir": str(out / "teacher"), "model": {"name": "st_alternet", "cfg": b["teacher"]}})
    teacher["train"]["epochs"] = b["teacher_epochs"]
    student = {"model": {"name": "unet", "cfg": dict(b["student"])}}
    baseline = _merge(common, {**student, "out_dir": str(out / "baseline")})
    baseline["train"]["epochs"] = b["student_epochs"]
    distilled = _merge(baseline, {"out_dir": str(out / "distilled"), "stage": "distill"})
    distilled["distill"] = {
        "teachers": [str(out / "teacher" / "best.pt")],
        "strategy": "single",
        "lam": b["lam"],
        "kd": dict(kd or DEMO_KD),
    }
    return {
        "teacher": build_config(base=teacher),
        "baseline": build_config(base=baseline),
        "distilled": build_config(base=distilled),
    }


def _merge(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


# Config keys that change only what is displayed, never the trained model: ignored when deciding reuse.
DISPLAY_KEYS = (("train", "progress"),)


def _settings(cfg: dict) -> dict:
    """What decides whether a finished stage can be reused: ``run_dir.comparable_config(cfg)`` (teachers' paths
    relative to the stage; a training stage's unused ``distill`` section dropped) without ``DISPLAY_KEYS`` and
    ``out_dir``.

    Where the folder lives, and how it was spelled (``--out runs/x`` or ``--out /work/runs/x``), is not a
    setting: a run folder copied or moved elsewhere, or named by an absolute path on the rerun, is reused
    (and so are teachers copied from one ``sdkd reproduce`` run into a run with another student)."""
    from .run_dir import comparable_config

    out = copy.deepcopy(comparable_config(cfg))
    out.pop("out_dir", None)
    for section, key in DISPLAY_KEYS:
        if isinstance(out.get(section), dict):
            out[section].pop(key, None)
    return out


def _finished(ck: dict, cfg: dict) -> bool:
    """Whether the run stored in ``ck`` (a ``last.pt``) has nothing left to train under ``cfg``: every epoch
    done, or stopped early by ``train.patience`` (as ``Trainer.fit`` decides on resume)."""
    from .loop import patience_spent

    epoch, bad = ck.get("epoch"), ck.get("bad_epochs")
    if not isinstance(epoch, int):
        return False
    patience = int(cfg["train"].get("patience", 0) or 0)
    return epoch + 1 >= int(cfg["train"]["epochs"]) or (isinstance(bad, int) and patience_spent(bad, patience))


def run_or_reuse(cfg: dict, datasets: dict, device: str | None, log, on_epoch_end=None) -> Path:
    """Train ``cfg``'s stage, resume it from last.pt, or reuse it when last.pt's config equals ``cfg``.

    The stored config is compared after filling in today's defaults, so a key added to the schema since
    it was written (with its default value) does not count as a change. Nothing is deleted: a run with other
    settings (or without a last.pt) has its files moved into an ``outdated-<time>`` subfolder
    (``run_dir.move_run_aside``); an unreadable last.pt is only reported. ``DISPLAY_KEYS`` are not
    compared. A finished stage is returned without loading data or teachers (a rerun of ``sdkd reproduce``
    only evaluates). ``on_epoch_end`` goes to the fit loop (``StageProgress.epoch_done``)."""
    from .checkpoint import CheckpointError, load_checkpoint
    from .config import ConfigError, build_config
    from .run import _plain, run_stage
    from .run_dir import RunFolderError, move_run_aside, run_files

    out = Path(cfg["out_dir"])
    last = out / "last.pt"
    found = run_files(out) if out.is_dir() else []
    if last.is_file():
        try:
            ck = load_checkpoint(last)
            stored = ck.get("config")
        except CheckpointError as exc:
            raise RunFolderError(
                f"{exc}; sdkd leaves it untouched: move or delete it yourself, or choose another --out"
            ) from None
        try:
            same = _settings(_plain(build_config(base=stored))) == _settings(_plain(cfg))
        except (ConfigError, TypeError):  # a config this sdkd no longer accepts: a different run
            same = False
        if not same:
            log(f"{out}: settings changed; previous run moved to {move_run_aside(out)}; training again")
        elif _finished(ck, cfg) and (out / "best.pt").is_file():  # nothing to train: skip data and teachers
            log(f"{out}: finished with these settings; reused")
            return out / "best.pt"
    elif found:
        log(f"{out}: {', '.join(found)} without last.pt moved to {move_run_aside(out)}; training again")
    run_stage(cfg, resume=True, device=device, log=log, datasets=datasets, on_epoch_end=on_epoch_end)
    return out / "best.pt"


def compare_line(baseline_mse: float, distilled_mse: float) -> str:
    """``distilled vs baseline test MSE: 52.2% lower`` (or ``... higher``): the change relative to the baseline."""
    change = 100.0 * (distilled_mse - baseline_mse) / baseline_mse
    return f"distilled vs baseline test MSE: {abs(change):.1f}% {'higher' if change > 0 else 'lower'}"


def run_demo(
    budget: str = "small",
    out: str | Path = "runs/demo",
    seed: int = 42,
    device: str | None = None,
    figures: bool = True,
    kd: dict | None = None,
    log=print,
) -> dict[str, dict[str, float]]:
    """Run the demo; returns ``{"teacher" | "baseline" | "distilled": metrics}``."""
    from sdkd.outputs import check_writable_dir

    from .evaluate import evaluate, format_table, target_range
    from .run import build_datasets, load_model

    out = Path(out)
    cfgs = stage_configs(budget, out, seed, kd)
    check_writable_dir(out, "--out")  # before any data is made
    t0 = time.perf_counter()
    log(f"[1/4] data: Navier-Stokes preset {cfgs['teacher']['data']['preset']!r}")
    show = progress_enabled()
    with stopped_in("the data generation"):
        datasets = build_datasets(cfgs["teacher"]["data"], seed, progress=show)
    paths = {}
    stages = StageProgress({n: (c["train"]["epochs"], c["model"]["name"]) for n, c in cfgs.items()}, log)
    for i, name in enumerate(("teacher", "baseline", "distilled"), start=2):
        log(f"[{i}/4] {name}: {cfgs[name]['model']['name']}, {cfgs[name]['train']['epochs']} epochs")
        stages.start(name)
        with stopped_in(stages.label(name), Path(cfgs[name]["out_dir"]) / "last.pt"):
            paths[name] = run_or_reuse(cfgs[name], datasets, device, log, on_epoch_end=stages.epoch_done)
    test = datasets["test"]
    R = target_range(test)
    rows, models = {}, {}
    with stopped_in("the evaluation (every stage is trained and saved)"):
        for name, path in paths.items():
            model, _ = load_model(path, "cpu")
            models[name] = model
            rows[name] = evaluate(model, test, device="cpu", data_range=R, progress=show, desc=f"test: {name}")
    table = format_table(rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(table + "\n")
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    log("")
    log(table)
    log("\n" + compare_line(rows["baseline"]["mse"], rows["distilled"]["mse"]))
    if figures:
        try:
            from .figures import write_figures

            for p in write_figures(models, test, out):
                log(f"wrote {p}")
        except ImportError as exc:
            from sdkd._optional import import_error_message

            log(f"figures skipped: {import_error_message(exc)}")
    log(f"done in {time.perf_counter() - t0:.0f} s; results in {out}")
    return rows


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--budget",
        default="small",
        choices=sorted(BUDGETS),
        help="smoke: tiny data and models, 2 epochs each (seconds; checks the pipeline, the numbers mean nothing); "
        "small (default): 120 generated 32x32 trajectories, 30 epochs per model (about 1 minute on 2 idle CPU "
        "cores, several times that on busy ones); medium: a bigger teacher and 80 epochs (about 3x small)",
    )
    parser.add_argument("--out", default="runs/demo", help="output folder (stages are reused from here)")
    parser.add_argument("--seed", type=int, default=42, help="seed of data splits, initialisation and batches")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    parser.add_argument("--no-figures", action="store_true", help="skip the figures (they need matplotlib)")


def run(args: argparse.Namespace) -> int:
    run_demo(args.budget, args.out, args.seed, args.device, figures=not args.no_figures)
    return 0
