"""``sdkd data rbc``: the cached RBC series, its figure, its loader and ``sdkd reproduce rbc --budget smoke``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sdkd.cli import main
from sdkd.data import rbc, rbc_cache
from sdkd.reproduce import MAIN_STAGES, stage_configs
from sdkd.train.run import build_datasets


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The ``tiny`` preset generated once through the CLI (with its figure): (data folder, .npy path). Single-threaded:
    these small grids run faster that way, above all on a busy machine."""
    root = tmp_path_factory.mktemp("rbc")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["data", "rbc", "--preset", "tiny", "--out", str(root), "--no-progress", "--figure"]) == 0
        (path,) = (root / "rbc").glob("*.npy")
        yield root, path
    finally:
        torch.set_num_threads(threads)


def test_cli_generates_the_series_with_metadata_then_reuses_it(tiny, capsys):
    root, path = tiny
    data = np.load(path)
    p = rbc_cache.PRESETS["tiny"]
    assert data.shape == (p["frames"], 1, p["height"], round(p["aspect"] * p["height"])) and data.dtype == np.float32
    assert 0 <= data.min() and data.max() <= 1  # temperature between the plates' values (maximum principle)
    assert data.std(axis=(0, 1, 3)).max() > 0.05  # convecting, not the conduction state
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["params"] == rbc_cache.cache_params("tiny") and meta["format"] == rbc_cache.CACHE_FORMAT
    assert len(meta["nusselt"]) == p["frames"] and 1.5 < meta["nusselt_mean"] < 6  # convective heat transport
    capsys.readouterr()
    mtime = path.stat().st_mtime_ns
    assert main(["data", "rbc", "--preset", "tiny", "--out", str(root), "--no-progress"]) == 0
    assert "reused cache" in capsys.readouterr().out and path.stat().st_mtime_ns == mtime


def test_cached_frames_are_simulates_records_after_the_spinup(tmp_path):
    params = rbc_cache.cache_params(
        None, rayleigh=5e3, height=4, aspect=2.0, refine=2, dt_save=0.5, spinup=1.0, frames=3, seed=7
    )
    array, path, reused = rbc_cache.cached_dataset(params, root=tmp_path, device="cpu", progress=False)
    assert not reused and path.parent == tmp_path / "rbc" and array.shape == (3, 1, 4, 8)
    direct = rbc.simulate(
        5e3, height=4, aspect=2.0, refine=2, t_start=1.0, t_final=2.5, dt_save=0.5, seed=7, device="cpu"
    )
    np.testing.assert_array_equal(array[:, 0], direct.temperature.numpy())
    meta = json.loads(path.with_suffix(".json").read_text())
    np.testing.assert_allclose(meta["nusselt"], direct.nusselt.numpy(), atol=1e-5)
    assert rbc_cache.cached_dataset(params, root=tmp_path, device="cpu", progress=False)[2]  # reused


def test_figure_is_written_next_to_the_data_and_an_existing_file_is_not_replaced(tiny, tmp_path):
    root, path = tiny
    png = path.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    mine = tmp_path / "mine.png"
    mine.write_bytes(b"not sdkd's")
    with pytest.raises(SystemExit):
        main(["data", "rbc", "--preset", "tiny", "--out", str(root), "--no-progress", "--figure", str(mine)])
    assert mine.read_bytes() == b"not sdkd's"


def test_loader_splits_the_series_in_time_into_the_presets_window_counts(tiny):
    root, _ = tiny
    cfg = {"name": "rbc", "preset": "tiny", "path": str(root), "input_frames": 13, "output_frames": 12}
    ds = build_datasets(cfg, progress=False)
    counts = [len(ds[s]) for s in ("train", "val", "test")]
    assert counts == [n - 24 for n in rbc_cache.PRESET_SPLITS["tiny"]]
    x, y = ds["train"][0]
    assert x.shape == (13, 1, 8, 32) and y.shape == (12, 1, 8, 32)
    assert abs(float(ds["train"].mean) - 0.5) < 0.1  # z-scored with the train split's statistics


def test_paper_preset_follows_table_2():
    p, splits = rbc_cache.PRESETS["paper"], rbc_cache.PRESET_SPLITS["paper"]
    assert (p["height"], round(p["aspect"] * p["height"])) == (32, 480)
    assert sum(splits) == p["frames"] and [n - (13 + 12) + 1 for n in splits] == [35_718, 4_465, 4_465]
    lat = rbc.lattice_parameters(p["rayleigh"], 0.71, p["height"] * p["refine"], p["dt_save"])
    assert lat.tau_f - 0.5 > 0.01 and lat.tau_t - 0.5 > 0.01  # clear of the BGK stability limit
    for preset, n in rbc_cache.PRESET_SPLITS.items():
        assert sum(n) == rbc_cache.PRESETS[preset]["frames"] and min(n) >= 25, preset


@pytest.mark.parametrize(
    "kwargs, text",
    [
        (dict(preset="huge"), "preset"),
        (dict(preset=None, rayleigh=1e4), "must be given"),
        (dict(spinup=0.3), "multiple of dt_save"),
        (dict(frames=0), "frames"),
        (dict(viscosity=1.0), "unknown"),
        (dict(rayleigh=1e9), "too high"),
    ],
)
def test_cache_params_rejects_bad_input(kwargs, text):
    preset = kwargs.pop("preset", "small")
    with pytest.raises((TypeError, ValueError), match=text):
        rbc_cache.cache_params(preset, **kwargs)


def test_reproduce_uses_the_generator_unless_given_a_file(tmp_path):
    cfg = stage_configs("rbc", "paper", tmp_path)["t1"]["data"]
    assert cfg["name"] == "rbc" and cfg["preset"] == "paper" and cfg["path"] is None
    assert stage_configs("rbc", "smoke", tmp_path, data_path=str(tmp_path))["t1"]["data"]["preset"] == "tiny"
    mine = tmp_path / "rbc.npy"
    np.save(mine, np.zeros((40, 1, 8, 8), np.float32))
    cfg = stage_configs("rbc", "smoke", tmp_path, data_path=str(mine))["t1"]["data"]
    assert cfg["name"] == "array" and cfg["path"] == str(mine)


@pytest.mark.slow
def test_reproduce_rbc_smoke_runs_end_to_end(tiny, tmp_path):
    root, _ = tiny
    out = tmp_path / "out"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        args = ["reproduce", "rbc", "--budget", "smoke", "--out", str(out), "--data", str(root), "--no-figures"]
        assert main(args) == 0
    finally:
        torch.set_num_threads(threads)
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert list(rows) == list(MAIN_STAGES)
    assert all(row["mse"] > 0 and np.isfinite(row["mse"]) for row in rows.values())
    assert (out / "results.md").read_text().count("| +") >= 6
