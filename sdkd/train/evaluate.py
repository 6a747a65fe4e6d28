"""Test-set evaluation: the metrics table of ``sdkd eval`` / ``sdkd demo`` and its figures' data.

MSE and MAE are per-pixel means in normalised units (the paper's convention) and, as
``mse_phys``, in physical units; PSNR and SSIM use one ``data_range`` for every model (the
range of the normalised test targets) so rows are comparable; band errors split the MSE at
``cutoff`` (low + high = MSE). ``openstl=True`` adds MSE/MAE in OpenSTL's convention (per frame,
the sum over C, H, W; then the mean over samples and frames), in normalised and physical units,
so rows can be set beside published OpenSTL tables (``OPENSTL_COLUMNS``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from sdkd import metrics as M

COLUMNS = ("mse", "mae", "psnr", "ssim", "low_err", "high_err", "mse_phys", "params", "latency_ms")
# columns that are finite for every finite prediction (psnr is inf for a perfect one; ssim is nan on tiny grids)
ERROR_METRICS = ("mse", "mae", "low_err", "high_err", "mse_phys")
OPENSTL_COLUMNS = ("mse_openstl", "mae_openstl", "mse_openstl_phys", "mae_openstl_phys")
#: latency_ms: median over at least LATENCY_RUNS single-sample forward passes (and LATENCY_MIN_SECONDS of them)
#: after LATENCY_WARMUP untimed ones.
LATENCY_RUNS, LATENCY_WARMUP, LATENCY_MIN_SECONDS = 10, 3, 0.3
LATENCY_NOTE = (
    "latency_ms: median time of one single-sample forward pass on this machine, after warm-up; "
    "machine-dependent: compare rows of one table, not across machines or runs"
)


def target_range(dataset: Any, batch_size: int = 64) -> float:
    lo, hi = float("inf"), float("-inf")
    for _, y in DataLoader(dataset, batch_size):
        lo, hi = min(lo, y.min().item()), max(hi, y.max().item())
    return hi - lo


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Any,
    *,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    data_range: float | None = None,
    cutoff: float = 0.25,
    latency: bool = True,
    openstl: bool = False,
    name: str | None = None,
    progress: bool = False,
    desc: str = "evaluate",
) -> dict[str, float]:
    """Metrics of ``model`` over ``dataset`` (normalised ``(x, y)`` windows with ``denormalize``);
    ``openstl``: also the ``OPENSTL_COLUMNS`` (OpenSTL's summed-per-frame MSE/MAE); ``progress``: a bar over
    the batches titled ``desc`` (``sdkd.train.progress.progress_enabled`` decides).

    Raises ``ValueError`` (naming ``name``, default the model's class) when a prediction or an error metric is not
    finite, so that no table or results file ever holds NaN/inf from a broken model.
    """
    from sdkd.models import summary
    from sdkd.models.summary import latency_stats

    from .progress import progress_bar

    name = name or type(model).__name__
    model = model.to(device).eval()
    R = data_range if data_range is not None else target_range(dataset)
    sums = dict.fromkeys(("sse", "sae", "sse_phys", "sae_phys", "psnr", "ssim", "low", "high"), 0.0)
    n_pix = n_maps = n_frames = 0
    small = min(dataset.in_shape[-2:]) < 11
    loader = DataLoader(dataset, batch_size)
    bar = progress_bar(len(loader), desc, progress, unit="batch")
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        p = model(x).float()
        _check_predictions(p, name, n_pix // max(1, y[0].numel()))
        sums["sse"] += (p - y).square().sum().item()
        sums["sae"] += (p - y).abs().sum().item()
        err_phys = dataset.denormalize(p.cpu()) - dataset.denormalize(y.cpu())
        sums["sse_phys"] += err_phys.square().sum().item()
        sums["sae_phys"] += err_phys.abs().sum().item()
        sums["psnr"] += M.psnr(p, y, data_range=R, reduction="none").sum().item()
        if not small:
            sums["ssim"] += M.ssim(p, y, data_range=R, reduction="none").sum().item()
        bands = M.band_errors(p, y, cutoff)
        sums["low"] += bands["low"].item() * y.numel()
        sums["high"] += bands["high"].item() * y.numel()
        n_pix += y.numel()
        n_maps += y.numel() // (y.shape[-1] * y.shape[-2])
        n_frames += y.shape[0] * y.shape[1]
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    row = {
        "mse": sums["sse"] / n_pix,
        "mae": sums["sae"] / n_pix,
        "psnr": sums["psnr"] / n_maps,
        "ssim": float("nan") if small else sums["ssim"] / n_maps,
        "low_err": sums["low"] / n_pix,
        "high_err": sums["high"] / n_pix,
        "mse_phys": sums["sse_phys"] / n_pix,
    }
    overflowed = [k for k in ERROR_METRICS if not math.isfinite(row[k])]
    if overflowed:
        raise ValueError(
            f"evaluate: {name}'s {', '.join(overflowed)} on the test split overflowed (not finite) although every "
            "prediction is finite: its errors are too large for float32 squares; the model has diverged"
        )
    if openstl:  # OpenSTL: sum over (C, H, W) per frame, mean over samples and frames
        row.update(
            mse_openstl=sums["sse"] / n_frames,
            mae_openstl=sums["sae"] / n_frames,
            mse_openstl_phys=sums["sse_phys"] / n_frames,
            mae_openstl_phys=sums["sae_phys"] / n_frames,
        )
    s = summary(model, tuple(dataset.in_shape), batch_size=1, latency=False, device=device)
    row["params"] = int(s.params)  # a count: results.json stores 483898, not 483898.0
    row["latency_ms"] = float("nan")
    if latency:
        x1 = torch.randn(1, *tuple(dataset.in_shape), device=device)
        lat = latency_stats(model, x1, runs=LATENCY_RUNS, warmup=LATENCY_WARMUP, min_seconds=LATENCY_MIN_SECONDS)
        row["latency_ms"], row["latency_spread"] = lat.median_ms, lat.spread
        if not lat.reliable:
            warnings.warn(
                f"latency of {type(model).__name__}: single-sample times varied {lat.spread:.1f}x between runs "
                f"(p10 {lat.p10_ms:.3g} ms, p90 {lat.p90_ms:.3g} ms): the machine is busy, so latency_ms is "
                "unreliable; time on a quiet machine",
                RuntimeWarning,
                stacklevel=2,
            )
    return row


def _check_predictions(p: torch.Tensor, name: str, first: int) -> None:
    """Raise if a batch of test predictions (the first window is number ``first``) holds NaN or inf."""
    bad = ~torch.isfinite(p)
    if bool(bad.any()):
        window = first + int(bad.reshape(len(p), -1).any(1).nonzero()[0, 0])
        raise ValueError(
            f"evaluate: {name} predicts {int(bad.sum())} non-finite values (NaN or inf) on the test split (first in "
            f"window {window}) although the test inputs are finite (diverged or corrupted weights, or test data far "
            "outside the training range); no metrics are written"
        )


def format_table(rows: Mapping[str, Mapping[str, float]], columns: Sequence[str] = COLUMNS) -> str:
    """A Markdown table, one row per model."""

    def fmt(col: str, v: float) -> str:
        if col == "params":
            return f"{v / 1e6:.3f} M"
        if col in ("psnr", "latency_ms"):
            return f"{v:.2f}"
        return f"{v:.4f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3e}"

    head = "| model | " + " | ".join(columns) + " |"
    sep = "|---|" + "---|" * len(columns)
    lines = [head, sep]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(fmt(c, float(row[c])) for c in columns) + " |")
    if "latency_ms" in columns:
        lines += ["", LATENCY_NOTE]
    return "\n".join(lines)
