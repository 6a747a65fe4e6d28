"""Figures of ``sdkd eval`` / ``sdkd demo``: frames, energy spectra, band errors; and of ``sdkd reproduce``:
Figure 2's claims (teacher latent spectrum against -5/3, band errors per model). Matplotlib."""

from __future__ import annotations

from collections.abc import Mapping
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
    a1.legend(fontsize=8, loc="lower left")

    names = list(band_errors)
    xs = np.arange(len(names), dtype=np.float64)
    low = [band_errors[n][0] for n in names]
    high = [band_errors[n][1] for n in names]
    a2.bar(xs - 0.2, low, 0.4, label=f"low band (r <= {cutoff:g})", color="tab:blue")
    a2.bar(xs + 0.2, high, 0.4, label="high band", color="tab:orange")
    a2.set_yscale("log")
    a2.set_xticks(xs, names, rotation=35, ha="right", fontsize=8)
    a2.set(ylabel="test MSE carried by the band (log)", title="low/high band errors per model")
    a2.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out, slope
