"""Figures of ``sdkd eval`` / ``sdkd demo``: frames, energy spectra, band errors; and of ``sdkd reproduce``:
Figure 2's claims (teacher latent spectrum against -5/3, band errors per model). Matplotlib."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from sdkd import metrics as M


def _predictions(models: Mapping[str, nn.Module], dataset: Any, batch_size: int = 16):
    ys, preds = [], {n: [] for n in models}
    with torch.no_grad():
        for x, y in DataLoader(dataset, batch_size):
            ys.append(y)
            for n, m in models.items():
                preds[n].append(m.eval()(x.to(next(m.parameters()).device)).float().cpu())
    return torch.cat(ys), {n: torch.cat(p) for n, p in preds.items()}


def short_names(names: Sequence[str]) -> dict[str, str]:
    """``{name: short title}``: a checkpoint path becomes its run folder (``runs/nse/teacher/best.pt`` ->
    ``teacher``; another file name is kept: ``teacher/epoch3``); other names are kept. Titles stay distinct."""
    out = {}
    for name in names:
        p = Path(name)
        if p.suffix in (".pt", ".pth", ".ckpt") or "/" in name or "\\" in name:
            short = p.parent.name if p.stem in ("best", "last") and p.parent.name else p.stem
            if p.stem not in ("best", "last") and p.parent.name:
                short = f"{p.parent.name}/{p.stem}"
            out[name] = short or name
        else:
            out[name] = name
    if len(set(out.values())) < len(out):  # two runs with the same folder name: keep the full names
        return {n: n for n in names}
    return out


def band_error_bars(
    ax: Any,
    names: Sequence[str],
    low: Sequence[float],
    high: Sequence[float],
    cutoff: float,
    low_std: Sequence[float] | None = None,
    high_std: Sequence[float] | None = None,
) -> None:
    """Low/high band errors per model as paired bars on a log axis (the high band is often 100x smaller
    and would vanish on a linear one), the legend outside the bars; ``*_std`` (over seeds) adds error bars."""
    xs = np.arange(len(names), dtype=np.float64)
    ax.bar(xs - 0.2, low, 0.4, yerr=low_std, capsize=2, label=f"low band (r <= {cutoff:g})", color="tab:blue")
    ax.bar(xs + 0.2, high, 0.4, yerr=high_std, capsize=2, label="high band", color="tab:orange")
    ax.set_yscale("log", nonpositive="clip")
    positive = [v for v in (*low, *high) if v > 0]
    if positive:  # bars start well below the smallest, so every bar is visible (log bars have no zero)
        ax.set_ylim(min(positive) / 3, max(positive) * 1.5)
    rotate = len(names) > 3 or max((len(n) for n in names), default=0) > 12
    ax.set_xticks(xs, names, rotation=30 if rotate else 0, ha="right" if rotate else "center", fontsize=8)
    ax.set_ylabel("MSE carried by the band (log)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def write_figures(
    models: Mapping[str, nn.Module], dataset: Any, out: str | Path, sample: int = 0, cutoff: float = 0.25
) -> list[Path]:
    """Write ``frames.png``, ``spectra.png`` and ``band_errors.png`` into ``out``; returns the paths.

    ``models``: ``{name or checkpoint path: model}`` (paths are shortened to their run folder in titles).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    y, preds = _predictions(models, dataset)
    titles = short_names(list(preds))
    preds = {titles[n]: p for n, p in preds.items()}
    paths = []

    # Last predicted frame of one test sample: truth (left, both rows), each prediction (top) and its error
    # (bottom); one colour scale per row, each with its colorbar.
    truth = y[sample, -1, 0].numpy()
    lead, channel = y.shape[1], " (channel 0)" if y.shape[2] > 1 else ""
    n = len(preds)
    fig = plt.figure(figsize=(2.6 * (n + 1) + 1.2, 5.2), layout="constrained")
    gs = fig.add_gridspec(2, n + 1)
    vmin, vmax = float(truth.min()), float(truth.max())
    errors = {name: p[sample, -1, 0].numpy() - truth for name, p in preds.items()}
    emax = max(float(np.abs(e).max()) for e in errors.values()) or 1.0
    ax_truth = fig.add_subplot(gs[:, 0])
    field = ax_truth.imshow(truth, cmap="RdBu_r", vmin=vmin, vmax=vmax)
    ax_truth.set_title(f"truth, lead +{lead}{channel}", fontsize=9)
    top, bottom = [ax_truth], []
    for j, (name, p) in enumerate(preds.items(), start=1):
        ax = fig.add_subplot(gs[0, j])
        ax.imshow(p[sample, -1, 0].numpy(), cmap="RdBu_r", vmin=vmin, vmax=vmax)
        ax.set_title(name, fontsize=9)
        top.append(ax)
        ax = fig.add_subplot(gs[1, j])
        err = ax.imshow(errors[name], cmap="PuOr_r", vmin=-emax, vmax=emax)
        ax.set_title(f"{name} - truth", fontsize=9)
        bottom.append(ax)
    for ax in top + bottom:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(field, ax=top[1:], shrink=0.9, label="field (truth, predictions)")
    fig.colorbar(err, ax=bottom, shrink=0.9, label="prediction - truth")
    fig.suptitle(f"test sample {sample}, last forecast frame", fontsize=10)
    paths.append(out / "frames.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    # Energy spectra of the fields and of the errors.
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    k, E = M.energy_spectrum(y)
    a1.loglog(k[1:].numpy(), E[1:].numpy(), "k-", lw=2, label="truth")
    for name, p in preds.items():
        k, Ep = M.energy_spectrum(p)
        a1.loglog(k[1:].numpy(), Ep[1:].numpy(), label=name)
        k, Ee = M.energy_spectrum(p - y)
        a2.loglog(k[1:].numpy(), Ee[1:].numpy(), label=name)
    a1.set(title="energy spectrum (test)", xlabel="wavenumber k", ylabel="E(k)")
    a2.set(title="error spectrum (test)", xlabel="wavenumber k", ylabel="E_err(k)")
    a1.legend(fontsize=8)
    a2.legend(fontsize=8)
    paths.append(out / "spectra.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    # Low/high band errors per model.
    names = list(preds)
    bands = [M.band_errors(preds[nm], y, cutoff) for nm in names]
    fig, ax = plt.subplots(figsize=(1.6 * n + 4.0, 4), layout="constrained")
    band_error_bars(ax, names, [b["low"].item() for b in bands], [b["high"].item() for b in bands], cutoff)
    ax.set_title("band errors (test)")
    paths.append(out / "band_errors.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths


KOLMOGOROV_SLOPE = -5.0 / 3.0


def latent_spectrum(latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(k, E(k), slope)`` of a latent ``(N, D, h, w)``: the energy spectrum averaged over samples and
    channels for ``k >= 1`` (``k = 0`` is the mean) and its least-squares log-log slope over those shells."""
    k, E = M.energy_spectrum(latent)
    k, E = k[1:], E[1:]
    return k, E, M.spectrum_slope(k, E)


def write_spectral_claims(
    latent: torch.Tensor,
    band_errors: Mapping[str, tuple[float, float]],
    out: str | Path,
    cutoff: float = 0.25,
    title: str = "teacher latent",
) -> tuple[Path, float]:
    """Figure 2's two claims in ``out`` (a PNG path): left, the teacher's latent energy spectrum with its
    fitted power law next to Kolmogorov's ``k^(-5/3)``; right, each model's low/high band test errors on
    a log axis. ``band_errors``: ``{model label: (low, high)}``. Returns the path and the fitted slope."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    out = Path(out)
    k, E, slope = latent_spectrum(latent)
    kk, EE = k.numpy(), E.numpy()
    keep = EE > 0
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1, 1.5]})
    a1.loglog(kk[keep], EE[keep], "o-", color="k", ms=3, label="E(k)")
    # both lines through the spectrum's log-mean point, so only the slopes differ
    k0, logE0 = float(np.exp(np.log(kk[keep]).mean())), float(np.log(EE[keep]).mean())
    for s, style, name in ((slope, "--", f"fit: slope {slope:.2f}"), (KOLMOGOROV_SLOPE, ":", "Kolmogorov -5/3")):
        a1.loglog(kk[keep], np.exp(logE0 + s * np.log(kk[keep] / k0)), style, lw=1.5, label=name)
    a1.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    a1.xaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    a1.set(title=f"{title} energy spectrum (test)", xlabel="wavenumber k", ylabel="E(k)")
    a1.legend(fontsize=8, loc="best")

    names = list(band_errors)
    band_error_bars(a2, names, [band_errors[n][0] for n in names], [band_errors[n][1] for n in names], cutoff)
    a2.set_title("low/high band errors per model (test)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out, slope
