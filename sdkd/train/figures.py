"""Figures of ``sdkd eval`` / ``sdkd demo``: frames, energy spectra, band errors (matplotlib)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

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


def write_figures(models: Mapping[str, nn.Module], dataset: Any, out: str | Path, sample: int = 0) -> list[Path]:
    """Write ``frames.png``, ``spectra.png`` and ``band_errors.png`` into ``out``; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    y, preds = _predictions(models, dataset)
    paths = []

    # Last predicted frame of one test sample: truth, each prediction, each error.
    truth = y[sample, -1, 0]
    n = len(preds)
    fig, axes = plt.subplots(2, n + 1, figsize=(3 * (n + 1), 6), squeeze=False)
    vmin, vmax = truth.min().item(), truth.max().item()
    axes[0, 0].imshow(truth, cmap="RdBu_r", vmin=vmin, vmax=vmax)
    axes[0, 0].set_title("truth (last frame)")
    axes[1, 0].axis("off")
    emax = max((p[sample, -1, 0] - truth).abs().max().item() for p in preds.values()) or 1.0
    for j, (name, p) in enumerate(preds.items(), start=1):
        axes[0, j].imshow(p[sample, -1, 0], cmap="RdBu_r", vmin=vmin, vmax=vmax)
        axes[0, j].set_title(name)
        axes[1, j].imshow(p[sample, -1, 0] - truth, cmap="RdBu_r", vmin=-emax, vmax=emax)
        axes[1, j].set_title(f"{name} error")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    paths.append(out / "frames.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    # Energy spectra of the fields and of the errors.
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    k, E = M.energy_spectrum(y)
    a1.loglog(k[1:], E[1:], "k-", label="truth")
    for name, p in preds.items():
        k, Ep = M.energy_spectrum(p)
        a1.loglog(k[1:], Ep[1:], label=name)
        k, Ee = M.energy_spectrum(p - y)
        a2.loglog(k[1:], Ee[1:], label=name)
    a1.set(title="energy spectrum", xlabel="wavenumber k", ylabel="E(k)")
    a2.set(title="error spectrum", xlabel="wavenumber k", ylabel="E_err(k)")
    a1.legend()
    a2.legend()
    fig.tight_layout()
    paths.append(out / "spectra.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    # Low/high band errors per model.
    fig, ax = plt.subplots(figsize=(1.8 * n + 2, 4))
    names = list(preds)
    bands = [M.band_errors(preds[nm], y) for nm in names]
    xs = torch.arange(n, dtype=torch.float64)
    ax.bar(xs - 0.2, [b["low"].item() for b in bands], 0.4, label="low (r <= 0.25)")
    ax.bar(xs + 0.2, [b["high"].item() for b in bands], 0.4, label="high")
    ax.set_xticks(xs.tolist(), names)
    ax.set(ylabel="MSE carried by band", title="band errors")
    ax.legend()
    fig.tight_layout()
    paths.append(out / "band_errors.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths
