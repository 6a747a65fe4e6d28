"""Figures of eval/demo, predict --figure and reproduce's Figure 2: drawn on tiny data with warnings as errors,
then read back from the matplotlib objects (colorbars, no empty cells, short titles, log band axis, legend
clear of the bars, evenly spaced lead times)."""

import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

pytest.importorskip("matplotlib")
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sdkd.forecast import evenly_spaced_leads, write_forecast_figure  # noqa: E402
from sdkd.models import build_model  # noqa: E402
from sdkd.train.figures import short_names, write_figures, write_spectral_claims  # noqa: E402

T, H, W = 4, 16, 16


@pytest.fixture
def drawn(monkeypatch):
    """Figures in the order they are closed, kept open for inspection; any warning while drawing fails."""
    figs, close = [], plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: figs.append(fig))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield figs
    for fig in figs:
        close(fig)


def _images(fig):
    return [ax for ax in fig.axes if ax.get_images()]


def _colorbars(fig):
    return [ax for ax in fig.axes if not ax.get_images() and ax.get_label() == "<colorbar>"]


def test_eval_figures_have_colorbars_no_empty_cells_short_titles_and_a_log_band_axis(drawn, tmp_path):
    torch.manual_seed(0)
    x = torch.randn(3, T, 1, H, W)
    data = TensorDataset(x, torch.roll(x, 1, -1))
    models = {
        "runs/nse/teacher/best.pt": build_model("unet", (T, 1, H, W), T, widths=[4, 8]),
        "runs/nse/distilled/best.pt": build_model("unet", (T, 1, H, W), T, widths=[2, 4]),
    }
    paths = write_figures(models, data, tmp_path)
    assert [p.name for p in paths] == ["frames.png", "spectra.png", "band_errors.png"]
    assert all(p.stat().st_size > 0 for p in paths)
    frames, spectra, bands = drawn

    panels = _images(frames)
    assert len(panels) == 1 + 2 * 2  # truth + (prediction, error) per model
    assert len(_colorbars(frames)) == 2  # fields and errors each have a scale
    assert all(ax.get_images() for ax in frames.axes if ax not in _colorbars(frames))  # no empty cell
    titles = [ax.get_title() for ax in panels]
    assert "teacher" in titles and "distilled - truth" in titles
    assert not any("/" in t or ".pt" in t for t in titles)

    (ax,) = [a for a in bands.axes]
    assert ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["teacher", "distilled"]
    bands.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    assert not any(legend.overlaps(bar.get_window_extent()) for bar in ax.patches)
    assert all(a.get_legend() is not None for a in spectra.axes)


def test_figure2_band_panel_is_log_and_its_legend_clear_of_the_bars(drawn, tmp_path):
    bands = {"T1": (0.1, 0.001), "S": (0.3, 0.01), "+SpectralKD": (0.2, 0.004)}
    write_spectral_claims(torch.randn(2, 4, 8, 8), bands, tmp_path / "fig2.png")
    (fig,) = drawn
    ax = fig.axes[1]
    assert ax.get_yscale() == "log"
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    assert not any(legend.overlaps(bar.get_window_extent()) for bar in ax.patches)


@pytest.mark.parametrize(("frames", "most", "expected"), [(10, 6, [1, 3, 5, 7, 9]), (36, 6, [5, 11, 17, 23, 29, 35]),
                                                           (4, 6, [0, 1, 2, 3]), (15, 6, [2, 5, 8, 11, 14])])  # fmt: skip
def test_lead_times_are_evenly_spaced_and_end_at_the_last(frames, most, expected):
    leads = evenly_spaced_leads(frames, most)
    assert leads == expected and len(set(np.diff(leads))) <= 1


def test_predict_figure_evenly_spaced_leads_and_a_colorbar_per_channel(drawn, tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((10, 2, 8, 8)), rng.standard_normal((36, 2, 8, 8))
    write_forecast_figure(x, y, tmp_path / "f.png", title="unet: window 0 of s.npy")
    (fig,) = drawn
    panels = _images(fig)
    leads = [int(ax.get_title().split("+")[1].split()[0]) for ax in panels if ax.get_title().startswith("forecast")]
    assert leads[:6] == [6, 12, 18, 24, 30, 36]
    assert len(panels) == 2 * 2 * 6 and len(_colorbars(fig)) == 2


def test_short_names():
    assert short_names(["runs/a/teacher/best.pt", "b/last.pt", "plain"]) == {
        "runs/a/teacher/best.pt": "teacher",
        "b/last.pt": "b",
        "plain": "plain",
    }
    assert short_names(["x/run/epoch3.pt"]) == {"x/run/epoch3.pt": "run/epoch3"}
    same = ["a/run/best.pt", "b/run/best.pt"]
    assert short_names(same) == {n: n for n in same}  # never two identical titles
