"""``sdkd reproduce``: the paper's experiments (section 4) as one resumable command.

For one dataset it trains the two teachers (T1 ST-AlterNet, T2 SimVP) and the paper's Table 5
"single teacher (VAN)" (SimVP with the VAN translator), a student alone (the
baseline) and the student distilled with single-teacher SpectralKD (on the outputs, and in the
latent space with each band from its own T1 branch), attention transfer, AVER-MKD, A2D/AEKD (with
output MSE, feature AB, SpectralKD and latent SpectralKD losses), CA-MKD and single-teacher
SpectralKD from the VAN teacher, then writes a table
like the paper's Tables 3-6 (``results.md``/``.csv``/``.json``) and figures like Figures 2-4
(spectral error; Figure 2's claims: T1's latent spectrum against -5/3 and every row's band errors;
improvement per method; inference speed). ``--ablation`` adds single-teacher SpectralKD variants
(cutoff, alpha, reduction, weighting vs plain output MSE) as extra rows.

Every stage lives in ``<out>/<stage>/``; a finished stage whose stored config equals the new one
is reused, an interrupted one resumes from ``last.pt``, a changed one is trained again after its
files are moved aside, never deleted (``sdkd.train.demo.run_or_reuse``); ``--set out_dir`` is
refused. Budgets: ``smoke`` (CI, seconds), ``cpu`` (NSE, about an hour on 2 CPU cores), ``paper``
(300 epochs, 1000/100/100 split at 64x64, a GPU). ``--seeds N`` trains every stage, teachers included, N
times (seeds SEED..SEED+N-1; replicate k >= 2 in ``<out>/seed<k>/``) and reports mean ± sample std over
seeds (``sdkd.seed_stats``).

Data: ``ns`` and ``rbc`` are generated and cached on first use (``rbc``: the ``sdkd.data.rbc_cache`` preset ``tiny``,
``small`` or ``paper`` for the smoke, cpu and paper budgets; ``--data FILE`` uses a user's RBC array file instead);
weatherbench and taxibj need ``--data``.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .errors import SdkdError
from .train.config import build_config, parse_override

# SpectralKD setting of the main rows: fixed band weights with the low band weighted 2x, the best
# setting on validation MSE in the NSE cpu-budget ablation (docs/results.md).
MAIN_KD: dict[str, Any] = {"type": "spectral", "cutoffs": 0.25, "alpha": 2.0, "reduction": "mean", "weighting": "fixed"}
# The ablation varies one factor at a time from the demo's setting (adaptive weighting).
ABLATION_BASE: dict[str, Any] = {
    "type": "spectral",
    "cutoffs": 0.25,
    "alpha": 1.0,
    "reduction": "mean",
    "weighting": "adaptive",
}

BUDGETS: dict[str, dict[str, Any]] = {
    # CI: tiny data and models, a couple of optimiser steps per stage.
    "smoke": {
        "preset": "tiny",
        "t1": {"hid_S": 8, "hid_T": 32, "N_S": 2, "N_T": 1, "num_heads": 2},
        "t2": {"hid_S": 8, "hid_T": 32, "N_S": 2, "N_T": 1, "mlp_ratio": 2.0},
        # <= 1/5 of every teacher on tiny grids (the MLP-Mixer's patch embedding grows with the grid)
        "students": {
            "unet": {"widths": [4, 8]},
            "resnet": {"widths": [4, 8], "depths": [1, 1], "strides": [1, 2]},
            "mixer": {"dim": 4, "depth": 1},
        },
        "teacher_epochs": 1,
        "student_epochs": 1,
        "max_steps_per_epoch": 2,
        "batch_size": 4,
        "lr": 1e-3,
        "scheduler": "none",
        "patience": 0,
        "lam": 1.0,
        "latency_runs": 3,
    },
    # About an hour on 2 (shared) CPU cores on the generated NSE "small" preset.
    "cpu": {
        "preset": "small",
        "t1": {"hid_S": 16, "hid_T": 128, "N_S": 4, "N_T": 4, "num_heads": 4},
        "t2": {"hid_S": 16, "hid_T": 96, "N_S": 4, "N_T": 4, "mlp_ratio": 4.0},
        # <= 1/5 of the smallest teacher on every dataset's grid (VAN: 0.71 M params on NSE 32x32,
        # 0.44 M on TaxiBJ 4 -> 4); the MLP-Mixer's patch embedding and head grow with the grid (128x128)
        "students": {
            "unet": {"widths": [12, 24, 48], "norm": "group", "act": "silu"},  # 3 levels: wide at full res
            "resnet": {
                "widths": [12, 24, 32],
                "depths": [2, 2, 2],
                "strides": [1, 2, 2],
                "norm": "group",
                "act": "silu",
            },
            "mixer": {"dim": 24, "depth": 4, "mlp_ratio": [0.25, 4.0]},
        },
        "teacher_epochs": 30,
        "student_epochs": 60,
        "max_steps_per_epoch": 50,
        "batch_size": 8,
        "lr": 1e-3,
        "scheduler": "cosine",
        "patience": 0,
        "lam": 1.0,
        "latency_runs": 30,
    },
    # The paper's protocol: Adam 1e-4 fixed, 300 epochs, early stopping, FNO-sized NSE (1000/100/100).
    "paper": {
        "preset": "fno",
        "t1": None,  # the dataset's preset teachers
        "t2": None,
        "students": None,
        "teacher_epochs": 300,
        "student_epochs": 300,
        "max_steps_per_epoch": None,
        "batch_size": 16,
        "lr": 1e-4,
        "scheduler": "none",
        "patience": 20,
        "lam": 1.0,
        "latency_runs": 50,
    },
}

# dataset -> (data config, model preset name); frames come from configs/models/<preset>.yaml (the
# paper's Table 2 by default; "_12h" / "_30min": the settings of the paper's text instead).
DATASETS: dict[str, tuple[dict[str, Any], str]] = {
    "ns": ({"name": "ns"}, "nse"),
    "rbc": ({"name": "rbc"}, "rbc"),
    "weatherbench": ({"name": "weatherbench", "variables": ["t2m", "tcc", "r"]}, "weatherbench"),
    "weatherbench_12h": (
        {"name": "weatherbench", "variables": ["t2m", "tcc", "r", "u10", "v10"]},
        "weatherbench_12h",
    ),
    "taxibj": ({"name": "taxibj"}, "taxibj"),
    "taxibj_plus": ({"name": "taxibj", "interval": "day", "splits": [0.8, 0.1, 0.1]}, "taxibj_plus"),
    "taxibj_plus_30min": ({"name": "taxibj", "interval": "30min", "splits": [0.8, 0.1, 0.1]}, "taxibj_plus_30min"),
}

# Generated RBC data (sdkd.data.rbc_cache) per budget; a --data FILE replaces it.
RBC_PRESETS = {"smoke": "tiny", "cpu": "small", "paper": "paper"}

STUDENT_NAMES = {"unet": "U-Net", "resnet": "ResNet", "mixer": "MLP-Mixer"}

# stage -> (table label, kind, strategy, kd config or None, teachers used)
MAIN_STAGES: dict[str, tuple[str, str, str | None, dict | None, tuple[str, ...]]] = {
    "t1": ("T1: ST-AlterNet", "teacher", None, None, ()),
    "t2": ("T2: SimVP", "teacher", None, None, ()),
    "t_van": ("T: SimVP-VAN", "teacher", None, None, ()),
    "student": ("S: {student}", "student", None, None, ()),
    "spectralkd": ("+SpectralKD (T1)", "distill", "single", MAIN_KD, ("t1",)),
    "spectralkd_latent": ("+SpectralKD latent (T1)", "distill", "single", {"type": "none"}, ("t1",)),
    "at": ("+AT (T1 attention maps)", "distill", "single", {"type": "none"}, ("t1",)),
    "aver": ("+AVER-MKD (w SpectralKD)", "distill", "aver", MAIN_KD, ("t1", "t2")),
    "a2d_mse": ("+A2D/AEKD (w MSE loss)", "distill", "a2d", {"type": "mse"}, ("t1", "t2")),
    "a2d_ab": ("+A2D/AEKD (w AB loss)", "distill", "a2d", {"type": "none"}, ("t1", "t2")),
    "a2d_spectralkd": ("+A2D/AEKD (w SpectralKD)", "distill", "a2d", MAIN_KD, ("t1", "t2")),
    "a2d_spectralkd_latent": ("+A2D/AEKD (w latent SpectralKD)", "distill", "a2d", {"type": "none"}, ("t1", "t2")),
    "camkd": ("+CA-MKD (w SpectralKD)", "distill", "camkd", MAIN_KD, ("t1", "t2")),
    "single_van": ("+SpectralKD (single teacher: VAN)", "distill", "single", MAIN_KD, ("t_van",)),
}


# Feature (latent) distillation rows: stage -> (distill.feature_loss, teacher tap, distill.feature_cfg). The
# student's bottleneck ``enc`` is paired with each teacher's last latent block: "last" its output, "branches"
# ST-AlterNet's two branch outputs, one per band (SimVP has no branches: its block output), "attention"
# ST-AlterNet's attention branch ``.low`` (Z + MHSA(Z)). The latent SpectralKD uses the main rows' setting.
FEATURE_STAGES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "a2d_ab": ("ab", "last", {}),
    "spectralkd_latent": ("spectral", "branches", {k: v for k, v in MAIN_KD.items() if k != "type"}),
    "a2d_spectralkd_latent": ("spectral", "branches", {k: v for k, v in MAIN_KD.items() if k != "type"}),
    "at": ("at", "attention", {}),
}


def _ablation(name: str, **kd: Any) -> tuple[str, str, str, dict, tuple[str, ...]]:
    return (f"abl: {name}", "distill", "single", {**ABLATION_BASE, **kd}, ("t1",))


# Single-teacher (T1) SpectralKD variants, one factor at a time, for adaptive and fixed band weighting. Fixed weighting with alpha = 1 and reduction "mean" is exactly output MSE,
# whatever the cutoff, so with fixed weighting the cutoff is varied at alpha = 0.5.
ABLATION_STAGES: dict[str, tuple[str, str, str | None, dict | None, tuple[str, ...]]] = {
    "abl_mse": ("abl: output MSE KD (= fixed, alpha 1)", "distill", "single", {"type": "mse"}, ("t1",)),
    "abl_adaptive": _ablation("adaptive (cutoff 0.25, alpha 1, mean)"),
    "abl_ad_cut0.125": _ablation("adaptive, cutoff 0.125", cutoffs=0.125),
    "abl_ad_cut0.375": _ablation("adaptive, cutoff 0.375", cutoffs=0.375),
    "abl_ad_alpha0.5": _ablation("adaptive, alpha 0.5", alpha=0.5),
    "abl_ad_alpha2": _ablation("adaptive, alpha 2", alpha=2.0),
    "abl_ad_band_mean": _ablation("adaptive, band_mean", reduction="band_mean"),
    "abl_fx_alpha0.5": _ablation("fixed, alpha 0.5", weighting="fixed", alpha=0.5),
    "abl_fx_alpha2": _ablation("fixed, alpha 2", weighting="fixed", alpha=2.0),
    "abl_fx_alpha0.5_cut0.125": _ablation(
        "fixed, alpha 0.5, cutoff 0.125", weighting="fixed", alpha=0.5, cutoffs=0.125
    ),
    "abl_fx_alpha0.5_cut0.375": _ablation(
        "fixed, alpha 0.5, cutoff 0.375", weighting="fixed", alpha=0.5, cutoffs=0.375
    ),
    "abl_fx_band_mean": _ablation("fixed, band_mean", weighting="fixed", reduction="band_mean"),
}

# The stages whose test predictions the spectral-error figure draws (kept per seed, the rest dropped).
FIGURE_STAGES = ("t1", "t2", "student", "spectralkd")

COLUMNS = (
    "val_mse",
    "mse",
    "mae",
    "psnr",
    "ssim",
    "low_err",
    "high_err",
    "mse_phys",
    "params",
    "latency_ms",
    "improvement_pct",
    "improvement_se",
)


# ----------------------------------------------------------------------------- configs
def _merge(a: dict, b: Mapping) -> dict:
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _model_preset(preset: str) -> dict[str, Any]:
    import yaml

    from .models.presets import config_dir

    path = config_dir() / f"{preset}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no model preset {str(path)!r}")
    return yaml.safe_load(path.read_text())


def _last_block(name: str, cfg: Mapping[str, Any], in_shape: tuple[int, ...]) -> str:
    """The teacher feature paired with the student's ``enc`` for AB distillation: the output of
    the last latent block (pre-activation: a residual sum or a projection)."""
    if name == "st_alternet":
        from .models.st_alternet import STAlterNetConfig

        return f"block{STAlterNetConfig.for_shape(in_shape, **cfg).N_T - 1}"
    from .models.simvp import SimVPConfig

    c = SimVPConfig.for_shape(in_shape, **cfg)
    return f"block{(2 * c.N_T if c.translator == 'incep' else c.N_T) - 1}"


def _teacher_tap(tap: str, name: str, cfg: Mapping[str, Any], in_shape: tuple[int, ...]) -> str | dict[str, str]:
    """The teacher side of a feature row (``FEATURE_STAGES``) for teacher model ``name``."""
    last = _last_block(name, cfg, in_shape)
    if name != "st_alternet" or tap == "last":
        return last
    return {"low": f"{last}.low", "high": f"{last}.high"} if tap == "branches" else f"{last}.low"


def stage_configs(
    dataset: str,
    budget: str,
    out: str | Path,
    *,
    student: str = "unet",
    ablation: bool = False,
    data_path: str | None = None,
    seed: int = 42,
    overrides: tuple[str, ...] = (),
) -> dict[str, dict[str, Any]]:
    """``{stage: config}`` of a reproduction run, in training order (teachers first)."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {dataset!r}")
    if budget not in BUDGETS:
        raise ValueError(f"budget must be one of {sorted(BUDGETS)}, got {budget!r}")
    if student not in STUDENT_NAMES:
        raise ValueError(f"student must be one of {sorted(STUDENT_NAMES)}, got {student!r}")
    if any(parse_override(o)[0] == ["out_dir"] for o in overrides):
        raise ValueError(
            "--set out_dir=... would put every stage in one folder; use --out FOLDER (stage s -> FOLDER/s)"
        )
    if dataset not in ("ns", "rbc") and not data_path:
        raise ValueError(f"dataset {dataset!r} needs --data PATH (the data file or folder)")
    b, out = BUDGETS[budget], Path(out)
    data_base, preset_name = DATASETS[dataset]
    preset = _model_preset(preset_name)
    in_shape = tuple(int(v) for v in preset["in_shape"])
    data = {
        **data_base,
        "input_frames": in_shape[0],
        "output_frames": int(preset["out_frames"]),
        "batch_size": b["batch_size"],
    }
    if dataset == "ns":
        data["preset"] = b["preset"]
    if dataset == "rbc":
        if data_path and Path(data_path).is_file():  # a user's RBC array file instead of the generator
            data["name"] = "array"
        else:
            data["preset"] = RBC_PRESETS[budget]
    if data_path:
        data["path"] = str(data_path)
    common = {
        "seed": seed,
        "data": data,
        "train": {
            "lr": b["lr"],
            "scheduler": b["scheduler"],
            "patience": b["patience"],
            "max_steps_per_epoch": b["max_steps_per_epoch"],
        },
    }
    teachers = {
        "t1": ("st_alternet", b["t1"] if b["t1"] is not None else dict(preset["teachers"]["st_alternet"] or {})),
        "t2": ("simvp", b["t2"] if b["t2"] is not None else dict(preset["teachers"]["simvp"] or {})),
    }
    teachers["t_van"] = ("simvp", {**teachers["t2"][1], "translator": "van"})  # Table 5's VAN teacher
    s_cfg = (b["students"] or {}).get(student)
    if s_cfg is None:
        s_cfg = dict(preset["students"][student] or {})
    stages = dict(MAIN_STAGES)
    if ablation:
        stages.update(ABLATION_STAGES)
    cfgs: dict[str, dict[str, Any]] = {}
    for stage, (_, kind, strategy, kd, used) in stages.items():
        cfg = _merge(common, {"out_dir": str(out / stage)})
        if kind == "teacher":
            name, mcfg = teachers[stage]
            cfg.update(model={"name": name, "cfg": mcfg})
            cfg["train"]["epochs"] = b["teacher_epochs"]
        else:
            cfg.update(model={"name": student, "cfg": s_cfg})
            cfg["train"]["epochs"] = b["student_epochs"]
        if kind == "distill":
            cfg["stage"] = "distill"
            cfg["distill"] = {
                "teachers": [str(out / t / "best.pt") for t in used],
                "strategy": strategy,
                "lam": b["lam"],
                "kd": dict(kd),
            }
            if stage in FEATURE_STAGES:  # student bottleneck <-> each teacher's last latent block
                loss, tap, options = FEATURE_STAGES[stage]
                sample_in = (in_shape[0], in_shape[1], *_data_hw(dataset, budget, in_shape))
                cfg["distill"]["features"] = [{"enc": _teacher_tap(tap, *teachers[t], sample_in)} for t in used]
                cfg["distill"]["feature_loss"] = loss
                cfg["distill"]["feature_lam"] = 1.0
                if options:
                    cfg["distill"]["feature_cfg"] = dict(options)
        cfgs[stage] = build_config(base=cfg, overrides=overrides)
    return cfgs


def _data_hw(dataset: str, budget: str, in_shape: tuple[int, ...]) -> tuple[int, int]:
    b = BUDGETS[budget]
    if dataset == "ns":
        from .data.navier_stokes import PRESETS

        r = int(PRESETS[b["preset"]]["resolution"])
        return r, r
    if dataset == "rbc":
        from .data.rbc_cache import PRESETS as RBC

        p = RBC[RBC_PRESETS[budget]]
        return int(p["height"]), round(p["aspect"] * p["height"])
    return int(in_shape[2]), int(in_shape[3])


# ----------------------------------------------------------------------------- evaluation
def _label(stage: str, student: str) -> str:
    entry = MAIN_STAGES.get(stage) or ABLATION_STAGES[stage]
    return entry[0].format(student=STUDENT_NAMES[student])


def evaluate_stages(
    paths: Mapping[str, Path],
    test: Any,
    latency_runs: int,
    device: str = "cpu",
    openstl: bool = False,
    progress: bool = False,
) -> tuple[dict[str, dict[str, float]], dict[str, torch.Tensor], torch.Tensor]:
    """Metrics per stage (``sdkd.train.evaluate``, latency re-measured with more runs, both on
    ``device``) plus the test predictions and targets (for the figures); ``openstl`` adds
    MSE/MAE in OpenSTL's convention (``sdkd.train.evaluate.OPENSTL_COLUMNS``); ``progress``: a bar over
    the stages."""
    from torch.utils.data import DataLoader

    from .models.summary import measure_latency
    from .train.evaluate import evaluate, target_range
    from .train.progress import progress_bar
    from .train.run import load_model

    R = target_range(test)
    rows, preds = {}, {}
    y = torch.cat([yb for _, yb in DataLoader(test, 16)])
    x1 = test[0][0].unsqueeze(0).to(device)
    bar = progress_bar(len(paths), "test split", progress, unit="model")
    for stage, path in paths.items():
        if bar is not None:
            bar.set_postfix_str(stage)
        model, _ = load_model(path, device)
        row = evaluate(model, test, device=device, data_range=R, latency=False, openstl=openstl, name=stage)
        row["latency_ms"] = measure_latency(model, x1, runs=latency_runs, warmup=3)
        row["val_mse"], row["train_s"], row["epochs"] = _stage_stats(Path(path).parent)
        rows[stage] = row
        with torch.no_grad():
            preds[stage] = torch.cat([model(xb.to(device)).float().cpu() for xb, _ in DataLoader(test, 16)])
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    # Improvement over the student alone, with the standard error of the paired per-window MSE
    # difference (how much of it the test set's size can resolve; seeds are not varied).
    per_window = {s: (p - y).square().flatten(1).mean(1).double() for s, p in preds.items()}
    base = rows.get("student")
    for stage, row in rows.items():
        row["improvement_pct"] = row["improvement_se"] = math.nan
        if base:
            diff = per_window["student"] - per_window[stage]
            row["improvement_pct"] = 100.0 * (base["mse"] - row["mse"]) / base["mse"]
            se = diff.std().item() / math.sqrt(len(diff)) if len(diff) > 1 else math.nan
            row["improvement_se"] = 100.0 * se / base["mse"]
    return rows, preds, y


@torch.no_grad()
def teacher_latent(path: Path, test: Any, device: str = "cpu", max_windows: int = 64) -> torch.Tensor:
    """The teacher's evolved latent (the output of its last latent block, ``(N, D, h, w)``) on the first
    ``max_windows`` test windows: the field whose energy spectrum Figure 2 compares with -5/3."""
    from torch.utils.data import DataLoader, Subset

    from .train.run import load_model

    model, ck = load_model(path, device)
    spec = ck["model_spec"]
    name = _last_block(spec["name"], spec["cfg"], tuple(spec["in_shape"]))
    subset = Subset(test, range(min(len(test), max_windows)))
    return torch.cat(
        [model(xb.to(device), return_features=True)[1][name].float().cpu() for xb, _ in DataLoader(subset, 16)]
    )


def _stage_stats(stage_dir: Path) -> tuple[float, float, int]:
    """Best validation MSE (what model selection may look at; the test columns may not), training
    seconds (sum over epochs, resumed runs included) and epochs run, from the stage's metrics.jsonl."""
    path = stage_dir / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line] if path.is_file() else []
    vals = [r["val_mse"] for r in rows if r.get("val_mse", math.nan) == r.get("val_mse", math.nan)]
    return (min(vals) if vals else math.nan), float(sum(r.get("seconds", 0.0) for r in rows)), len(rows)


def _columns(rows: Mapping[str, Mapping[str, float]]) -> tuple[str, ...]:
    """``COLUMNS``, plus OpenSTL's MSE/MAE when the rows have them (``--openstl-metrics``)."""
    from .train.evaluate import OPENSTL_COLUMNS

    extra = OPENSTL_COLUMNS if rows and all(c in r for r in rows.values() for c in OPENSTL_COLUMNS) else ()
    at = COLUMNS.index("params")  # after the error metrics
    return COLUMNS[:at] + extra + COLUMNS[at:]


def _fmt(col: str, v: float) -> str:
    if col == "params":
        return f"{v / 1e6:.3f} M"
    if col == "improvement_pct":
        return "—" if math.isnan(v) else f"{v:+.1f}%"
    if col == "improvement_se":
        return "—" if math.isnan(v) else f"±{v:.1f}%"
    if col in ("psnr", "latency_ms"):
        return f"{v:.2f}"
    return f"{v:.4f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3e}"


def _fmt_spread(col: str, v: float) -> str:
    """A standard deviation over seeds, in its column's units (no sign)."""
    if col.startswith("improvement"):
        return f"{v:.1f}%"
    return _fmt(col, v)


def format_results(
    rows: Mapping[str, Mapping[str, float]],
    student: str,
    roles: Mapping[str, str],
    std: Mapping[str, Mapping[str, float]] | None = None,
    better: Mapping[str, bool | None] | None = None,
) -> str:
    """Markdown table: one row per stage, the paper's metrics plus size, latency and improvement.

    With ``std`` (several seeds) every metric column reads ``mean ± std`` (``params`` only its mean) and
    a last column ``better`` says whether the row beats the student alone (``sdkd.seed_stats.is_better``)."""
    columns = _columns(rows)
    header = (*columns, "better") if std is not None else columns
    lines = ["| method | " + " | ".join(header) + " |", "|---|" + "---|" * len(header)]
    for stage, row in rows.items():
        teacher = roles[stage] == "teacher"
        vals = []
        for c in columns:
            if c.startswith("improvement") and teacher:
                vals.append("—")
                continue
            cell = _fmt(c, float(row[c]))
            spread = float(std[stage][c]) if std is not None else math.nan
            if c != "params" and not math.isnan(spread) and not math.isnan(float(row[c])):
                cell += f" ± {_fmt_spread(c, spread)}"
            vals.append(cell)
        if std is not None:
            verdict = (better or {}).get(stage)
            vals.append("—" if verdict is None else ("**yes**" if verdict else "no"))
        lines.append(f"| {_label(stage, student)} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def write_csv(
    rows: Mapping[str, Mapping[str, float]],
    student: str,
    roles: Mapping[str, str],
    path: Path,
    *,
    seeds: Sequence[int] = (),
    per_seed: Sequence[Mapping[str, Mapping[str, float]]] = (),
    std: Mapping[str, Mapping[str, float]] | None = None,
) -> None:
    """One line per stage and seed (column ``seed``), then, with several seeds, its ``mean`` and ``std`` lines.
    Without ``per_seed`` the ``rows`` are written as the only seed (``seeds[0]``, or empty)."""
    if not per_seed:
        per_seed, seeds = [rows], list(seeds[:1]) or [""]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        cols = (*_columns(rows), "epochs", "train_s")
        w.writerow(["stage", "method", "role", "seed", *cols])
        for stage in rows:
            lines = [(str(s), r[stage]) for s, r in zip(seeds, per_seed)]
            if len(per_seed) > 1 and std is not None:
                lines += [("mean", rows[stage]), ("std", std[stage])]
            for seed, row in lines:
                vals = (f"{float(row[c]):.6g}" for c in cols)
                w.writerow([stage, _label(stage, student), roles[stage], seed, *vals])


# ----------------------------------------------------------------------------- figures
def figure2_rows(rows: Iterable[str]) -> list[str]:
    """The stages whose band errors ``figure2.png`` draws: the main table's (the ablation's one-setting variants
    would crowd it; they are in ``results.md`` and ``improvement.png``)."""
    return [s for s in rows if s in MAIN_STAGES]


def write_figures(
    rows: Mapping[str, Mapping[str, float]],
    preds: Mapping[str, torch.Tensor | Sequence[torch.Tensor]],
    y: torch.Tensor,
    student: str,
    roles: Mapping[str, str],
    out: Path,
    latent: torch.Tensor | None = None,
    std: Mapping[str, Mapping[str, float]] | None = None,
) -> list[Path]:
    """``spectral_error.png`` (Fig. 2), ``improvement.png`` (Fig. 3), ``speed.png`` (Fig. 4) and, given T1's
    ``latent``, ``figure2.png`` (Fig. 2's claims: latent spectrum vs -5/3, band errors of every model).

    Several seeds: ``rows`` are the seed means, ``std`` their standard deviations (the error bars), and a
    stage's ``preds`` a list with one prediction per seed (its error spectrum is the mean over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import metrics as M

    paths = []
    # Figure 2: error spectrum and low/high band errors of teachers, student and distilled student.
    show = [s for s in FIGURE_STAGES if s in preds]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for s in show:
        runs = [preds[s]] if isinstance(preds[s], torch.Tensor) else list(preds[s])
        spectra = [M.energy_spectrum(p - y) for p in runs]
        k, E = spectra[0][0], torch.stack([e for _, e in spectra]).mean(0)
        a1.loglog(k[1:].numpy(), E[1:].numpy(), label=_label(s, student))
    a1.set(title="error spectrum (test)", xlabel="wavenumber k", ylabel="E_err(k)")
    a1.legend(fontsize=8)
    from .train.figures import band_error_bars

    low, high = [rows[s]["low_err"] for s in show], [rows[s]["high_err"] for s in show]
    spreads = {}
    if std is not None:
        spreads = {"low_std": [std[s]["low_err"] for s in show], "high_std": [std[s]["high_err"] for s in show]}
    band_error_bars(a2, [_label(s, student) for s in show], low, high, cutoff=0.25, **spreads)
    a2.set_title("spectral error by band (test)")
    fig.tight_layout()
    paths.append(out / "spectral_error.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    # Figure 3: improvement over the baseline student, per method.
    distilled = [s for s in rows if roles[s] == "distill"]
    if distilled:
        fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * len(distilled) + 2), 4.5))
        vals = [rows[s]["improvement_pct"] for s in distilled]
        errs = [(std or rows)[s]["improvement_pct" if std is not None else "improvement_se"] for s in distilled]
        colors = ["tab:green" if v >= 0 else "tab:red" for v in vals]
        ax.bar(range(len(distilled)), vals, yerr=errs, capsize=3, color=colors)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(range(len(distilled)), [_label(s, student) for s in distilled], rotation=30, ha="right")
        ax.set(
            ylabel="test MSE gain over the student (%)",
            title="improvement per method (" + ("±1 std over seeds)" if std is not None else "±1 paired SE)"),
        )
        fig.tight_layout()
        paths.append(out / "improvement.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)

    # Figure 4: inference latency (batch 1) of the teachers and the (distilled) student.
    speed = [s for s in ("t1", "t2", "spectralkd" if "spectralkd" in rows else "student") if s in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    lat = [rows[s]["latency_ms"] for s in speed]
    lat_err = [std[s]["latency_ms"] for s in speed] if std is not None else None
    colors = ["tab:blue"] * (len(speed) - 1) + ["tab:orange"]
    ax.bar(range(len(speed)), lat, yerr=lat_err, capsize=3, color=colors)
    tops = [v + (lat_err[i] if lat_err else 0.0) for i, v in enumerate(lat)]  # labels clear of the error bars
    for i, v in enumerate(lat):
        ax.text(i, tops[i], f"{v:.2f} ms\n{v / lat[-1]:.2f}x the student", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(speed)), [_label(s, student) for s in speed], rotation=15)
    ax.set(ylabel="inference latency, batch 1 (ms)", title="teacher vs distilled student speed")
    ax.set_ylim(0, max(tops) * 1.25)
    fig.tight_layout()
    paths.append(out / "speed.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    if latent is not None:  # Figure 2's claims: T1's latent spectrum vs -5/3; every model's band errors
        from .train.figures import write_spectral_claims

        bands = {_label(s, student): (rows[s]["low_err"], rows[s]["high_err"]) for s in figure2_rows(rows)}
        paths.append(write_spectral_claims(latent, bands, out / "figure2.png", title="T1 latent")[0])
    return paths


# ----------------------------------------------------------------------------- driver
def _environment() -> dict[str, Any]:

    import sdkd

    return {
        "sdkd": sdkd.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def check_teachers_source(source: str | Path, out: str | Path) -> Path:
    """``source`` as a ``--teachers-from`` folder, or one line naming the fix (before anything is written)."""
    source = Path(source)
    if not source.is_dir():
        raise SdkdError(f"--teachers-from {str(source)!r} is not a folder (give the --out of an earlier reproduce run)")
    if source.resolve() == Path(out).resolve():
        raise SdkdError("--teachers-from names the --out folder itself; give the --out of another reproduce run")
    return source


def copy_teachers(source: str | Path, out: str | Path, seeds: int, log: Callable[[str], None] = print) -> list[Path]:
    """Copy the teacher stages (``t1``, ``t2``, ``t_van``) of every seed replicate of the reproduce run in
    ``source`` into ``out``, so a run with another student learns from the same teachers (they are reused when
    their settings match, trained otherwise). Only sdkd's run files are copied, each by an atomic rename; a
    stage ``out`` already holds is left alone (sdkd overwrites nothing). Returns the stage folders filled."""
    from .data.cache import atomic_path
    from .seed_stats import seed_dir
    from .train.run_dir import RUN_FILES, run_files

    source, out = check_teachers_source(source, out), Path(out)
    filled = []
    for k in range(1, seeds + 1):
        for stage in (s for s, spec in MAIN_STAGES.items() if spec[1] == "teacher"):
            src, dst = seed_dir(source, k) / stage, seed_dir(out, k) / stage
            if not (src / "last.pt").is_file():
                log(f"{src}: no finished teacher to copy; {dst.name} trains in {dst.parent}")
                continue
            if dst.is_dir() and run_files(dst):
                continue  # this run's own (or earlier copied) teacher: run_or_reuse decides
            dst.mkdir(parents=True, exist_ok=True)
            for name in RUN_FILES:
                if (src / name).is_file():
                    with atomic_path(dst / name) as tmp:
                        shutil.copy2(src / name, tmp)
            filled.append(dst)
    if filled:
        log(f"[teachers] copied {len(filled)} teacher stage(s) from {source}")
    return filled


def run_reproduce(
    dataset: str = "ns",
    budget: str = "smoke",
    out: str | Path | None = None,
    *,
    student: str = "unet",
    ablation: bool = False,
    data_path: str | None = None,
    seed: int = 42,
    seeds: int = 1,
    device: str | None = None,
    overrides: tuple[str, ...] = (),
    figures: bool = True,
    openstl: bool = False,
    command: str | None = None,
    teachers_from: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, dict[str, float]]:
    """Run (or resume) every stage, evaluate on the test split, write the table and figures.

    ``seeds`` replicates every stage, teachers included, with seeds ``seed, seed + 1, ...``; replicate k
    lives in ``sdkd.seed_stats.seed_dir(out, k)`` and its distilled students learn from its own teachers.
    Returns ``{stage: metrics}`` (the mean over seeds); files go to ``out`` (default
    ``runs/reproduce/<dataset>-<budget>-<student>``).
    Evaluation and latency run on the training device (``device``; default CUDA when available).
    ``openstl`` adds MSE/MAE in OpenSTL's convention (per frame, summed over C, H, W) to the table.
    ``teachers_from`` (another run's ``out``) copies its teachers in first (``copy_teachers``).
    """
    from .outputs import check_writable_dir
    from .seed_stats import better_than_student, replicate_seeds, seed_dir, summarize
    from .train.demo import run_or_reuse
    from .train.interrupt import stopped_in
    from .train.progress import StageProgress, progress_enabled
    from .train.run import build_datasets

    out = Path(out or f"runs/reproduce/{dataset}-{budget}-{student}")
    seed_list = replicate_seeds(seed, seeds)
    if seeds > 1 and any(parse_override(o)[0] == ["seed"] for o in overrides):
        raise ValueError(
            "--set seed=... would give every replicate the same seed; use --seed BASE (replicate k: BASE+k-1)"
        )
    replicas = [
        stage_configs(
            dataset,
            budget,
            seed_dir(out, k),
            student=student,
            ablation=ablation,
            data_path=data_path,
            seed=s,
            overrides=overrides,
        )
        for k, s in enumerate(seed_list, start=1)
    ]
    cfgs = replicas[0]
    roles = {s: (MAIN_STAGES.get(s) or ABLATION_STAGES[s])[1] for s in cfgs}
    if teachers_from is not None:
        check_teachers_source(teachers_from, out)
    check_writable_dir(out, "--out")  # before any data is made
    if teachers_from is not None:
        copy_teachers(teachers_from, out, seeds, log)
    t0 = time.perf_counter()
    first = next(iter(cfgs.values()))
    log(f"[data] {dataset}: {describe_data(first['data'])}")
    show = progress_enabled()
    with stopped_in("the data preparation"):
        datasets = build_datasets(first["data"], seed, progress=show)
    runs: list[dict[str, Path]] = []
    # one stage/ETA line per epoch over every stage of every seed ("seed2/t1" when there are several)
    names = [[f"seed{k}/{st}" if seeds > 1 else st for st in c] for k, c in enumerate(replicas, start=1)]
    stages = StageProgress(
        {
            n: (c["train"]["epochs"], c["model"]["name"])
            for ns, cs in zip(names, replicas)
            for n, c in zip(ns, cs.values())
        },
        log,
    )
    for k, (s, stage_cfgs) in enumerate(zip(seed_list, replicas), start=1):
        tag = f"[seed {k}/{seeds}: {s}] " if seeds > 1 else ""
        paths: dict[str, Path] = {}
        for i, (stage, cfg) in enumerate(stage_cfgs.items(), start=1):
            model, epochs = cfg["model"]["name"], cfg["train"]["epochs"]
            log(f"{tag}[{i}/{len(stage_cfgs)}] {stage}: {_label(stage, student)} ({model}, {epochs} ep)")
            stages.start(names[k - 1][i - 1])
            with stopped_in(stages.label(names[k - 1][i - 1]), Path(cfg["out_dir"]) / "last.pt"):
                paths[stage] = run_or_reuse(cfg, datasets, device, log, on_epoch_end=stages.epoch_done)
        runs.append(paths)
    log("[eval] test split")
    b = BUDGETS[budget]
    eval_device = device or ("cuda" if torch.cuda.is_available() else "cpu")  # as run_stage picks it
    per_seed, preds = [], {}
    with stopped_in("the evaluation (every stage is trained and saved)"):
        for paths in runs:
            rows_k, preds_k, y = evaluate_stages(
                paths, datasets["test"], b["latency_runs"], device=eval_device, openstl=openstl, progress=show
            )
            per_seed.append(rows_k)
            for stage in FIGURE_STAGES:  # only what the figures draw: one prediction per seed
                if stage in preds_k:
                    preds.setdefault(stage, []).append(preds_k[stage])
    rows, std = summarize(per_seed)
    better = better_than_student(rows, std, roles) if seeds > 1 else None
    table = format_results(rows, student, roles, std if seeds > 1 else None, better)
    env = _environment()
    flags = (" --ablation" if ablation else "") + (f" --seeds {seeds}" if seeds > 1 else "")
    if seeds > 1:
        spread = (
            f"every value is the mean ± sample std (N-1) over {seeds} seeds ({', '.join(map(str, seed_list))}); "
            "seed k trains every stage, teachers included, in <out>/seed<k>/ (k = 1: <out>/), and its distilled "
            "students learn from its own teachers; improvement: test MSE vs the same seed's student alone; "
            "improvement_se: per seed, the standard error of the paired per-window MSE difference; better: the "
            "student's mean test MSE exceeds the row's by more than the larger of the two stds."
        )
    else:
        spread = (
            "improvement: test MSE vs the student alone, improvement_se: standard error of the paired per-window "
            "MSE difference (test-set noise only, one seed)."
        )
    header = [
        f"# sdkd reproduce {dataset} --budget {budget} --student {student}" + flags,
        "",
        f"command: `{command or ' '.join(['sdkd', 'reproduce', dataset, '--budget', budget]) + flags}`",
        "",
        "environment: " + ", ".join(f"{k} {v}" for k, v in env.items()),
        "",
        f"val_mse: best validation MSE; test split: {len(datasets['test'])} windows; metrics in normalised units "
        "(mse_phys: physical units); "
        "latency: median ms per batch-1 forward on the evaluation device; " + spread,
        "",
    ]
    (out / "results.md").write_text("\n".join(header) + "\n" + table + "\n")
    write_csv(rows, student, roles, out / "results.csv", seeds=seed_list, per_seed=per_seed, std=std)
    result = {
        "environment": env,
        "budget": budget,
        "dataset": dataset,
        "seeds": seed_list,
        "rows": rows,
        "std": std,
        "better": better,
        "per_seed": {str(s): r for s, r in zip(seed_list, per_seed)},
    }
    (out / "results.json").write_text(json.dumps(result, indent=2))
    log("")
    log(table)
    if figures:
        try:
            latent = teacher_latent(runs[0]["t1"], datasets["test"]) if "t1" in runs[0] else None
            for p in write_figures(rows, preds, y, student, roles, out, latent, std if seeds > 1 else None):
                log(f"wrote {p}")
        except ImportError as exc:
            from sdkd._optional import import_error_message

            log(f"figures skipped: {import_error_message(exc)}")
    log(f"done in {time.perf_counter() - t0:.0f} s; results in {out}")
    return rows


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def describe_data(data: dict[str, Any]) -> str:
    """One readable line for a data config (``ns preset 'small', 10 -> 10 frames, batch 8``), not the raw dict."""
    source = str(data["path"]) if data.get("path") else f"preset {data.get('preset')!r}"  # a file, or generated
    parts = [f"{data['name']} {source}", f"{data['input_frames']} -> {data['output_frames']} frames"]
    if data.get("variables"):
        parts.append(f"variables {', '.join(map(str, data['variables']))}")
    parts.append(f"batch {data['batch_size']}")
    return ", ".join(parts)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dataset",
        choices=sorted(DATASETS),
        help="ns, rbc (generated; --data FILE overrides), weatherbench[_12h]/taxibj/taxibj_plus[_30min] (--data)",
    )
    parser.add_argument("--budget", default="smoke", choices=list(BUDGETS), help="smoke: CI; cpu: ~1 h; paper: GPU")
    parser.add_argument(
        "--student", default="unet", choices=list(STUDENT_NAMES), help="the student model (default unet)"
    )
    parser.add_argument("--ablation", action="store_true", help="add the SpectralKD ablation rows")
    parser.add_argument(
        "--data",
        default=None,
        help="data file/folder (for ns and rbc: the generated-data cache folder, or an rbc file)",
    )
    parser.add_argument(
        "--out", default=None, help="output folder (default runs/reproduce/<dataset>-<budget>-<student>)"
    )
    parser.add_argument(
        "--seed", type=int, default=42, help="seed of initialisation and batches of the first replicate (k: SEED+k-1)"
    )
    parser.add_argument(
        "--seeds",
        type=_positive_int,
        default=1,
        metavar="N",
        help="train every stage with N seeds (replicate k >= 2 in OUT/seed<k>/); tables show mean ± std",
    )
    parser.add_argument(
        "--teachers-from",
        default=None,
        metavar="DIR",
        help="copy the teachers of the reproduce run in DIR (its --out, every seed) and reuse them, "
        "e.g. to distill them into another --student",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    parser.add_argument("--no-figures", action="store_true", help="skip the figures (they need matplotlib)")
    parser.add_argument(
        "--openstl-metrics",
        action="store_true",
        help="also MSE/MAE in OpenSTL's convention (per frame, sum over C, H, W; mean over samples and frames)",
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, all stages")


def run(args: argparse.Namespace) -> int:
    run_reproduce(
        args.dataset,
        args.budget,
        args.out,
        student=args.student,
        ablation=args.ablation,
        data_path=args.data,
        seed=args.seed,
        seeds=args.seeds,
        device=args.device,
        overrides=tuple(args.set),
        figures=not args.no_figures,
        openstl=args.openstl_metrics,
        teachers_from=args.teachers_from,
        command="sdkd " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("sdkd") else None,
    )
    return 0
