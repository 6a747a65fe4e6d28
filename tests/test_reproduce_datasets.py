"""``sdkd reproduce <dataset> --budget smoke --data FILE`` end to end for every file-based dataset
preset (paper Table 2 and the text's variants), each on a small synthetic file of the real layout.

To stay fast, each run trains a subset of the stages (a teacher, the student alone and one
distilled student); ``test_reproduce.py`` runs every stage on NSE.
"""

import json

import numpy as np
import pytest
import torch

import sdkd.reproduce as R
from sdkd.cli import main
from sdkd.train import load_checkpoint

FEW = ("t1", "student", "spectralkd")
VAN = ("t_van", "student", "single_van")  # Table 5's VAN row, on RBC as in the paper


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _run(monkeypatch, tmp_path, dataset, data, stages=FEW):
    monkeypatch.setattr(R, "MAIN_STAGES", {s: R.MAIN_STAGES[s] for s in stages})
    out = tmp_path / "out"
    argv = ["reproduce", dataset, "--budget", "smoke", "--data", str(data), "--out", str(out), "--no-figures"]
    assert main(argv) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert list(rows) == list(stages)
    for stage, row in rows.items():
        assert row["mse"] > 0 and np.isfinite(row["mse"]) and row["params"] > 0, stage
    ck = load_checkpoint(out / stages[-1] / "best.pt")
    return ck["model_spec"], ck["config"]["data"]


def _preset_frames(dataset):
    from sdkd.models.presets import load_model_config

    spec = load_model_config(R.DATASETS[dataset][1], "unet")
    return spec["in_shape"][0], spec["out_frames"], spec["in_shape"][1]


# ----------------------------------------------------------------------------- WeatherBench
@pytest.fixture(scope="module")
def weatherbench_root(tmp_path_factory):
    """WeatherBench's layout, <root>/<long_name>/<long_name>_<year>_5.625deg.nc, 2010-2018, 44 hours a
    year on an 8 x 16 grid; ``r`` has a pressure-level dimension as in the real files."""
    xr = pytest.importorskip("xarray")
    pd = pytest.importorskip("pandas")
    from sdkd.data.weatherbench import VARIABLES

    root = tmp_path_factory.mktemp("wb") / "5.625deg"
    rng = np.random.default_rng(0)
    for short in ("t2m", "tcc", "r", "u10", "v10"):
        long = VARIABLES[short]
        (root / long).mkdir(parents=True)
        for year in range(2010, 2019):
            coords = {
                "time": pd.date_range(f"{year}-01-01", periods=44, freq="h"),
                "lat": np.linspace(-87.1875, 87.1875, 8),
                "lon": np.arange(16) * 22.5,
            }
            dims, shape = ("time", "lat", "lon"), (44, 8, 16)
            if short == "r":
                coords["level"] = [500, 850]
                dims, shape = ("time", "level", "lat", "lon"), (44, 2, 8, 16)
            values = rng.standard_normal(shape).astype(np.float32)
            xr.Dataset({short: (dims, values)}, coords=coords).to_netcdf(root / long / f"{long}_{year}_5.625deg.nc")
    return root


@pytest.mark.parametrize("dataset,channels", [("weatherbench", 3), ("weatherbench_12h", 5)])
def test_weatherbench_presets(monkeypatch, tmp_path, weatherbench_root, dataset, channels):
    t_in, t_out, c = _preset_frames(dataset)
    assert c == channels and (dataset != "weatherbench" or (t_in, t_out) == (6, 36))  # Table 2: 6 -> 36, 3 vars
    spec, data = _run(monkeypatch, tmp_path, dataset, weatherbench_root)
    assert spec["in_shape"] == [t_in, channels, 8, 16] and spec["out_frames"] == t_out
    assert len(data["variables"]) == channels


# ----------------------------------------------------------------------------- TaxiBJ+
def _taxibj_plus_file(path, days):
    """DeepST's h5 layout (``data`` (slots, 2, H, W) inflow/outflow, ``date`` YYYYMMDDss) on an 8 x 8
    grid, ``days`` days of half-hour slots (TaxiBJ+ itself is 128 x 128)."""
    h5py = pytest.importorskip("h5py")
    start = np.datetime64("2015-01-01")
    dates = [f"{str(start + d).replace('-', '')}{s:02d}".encode() for d in range(days) for s in range(1, 49)]
    values = np.random.default_rng(1).integers(0, 40, (len(dates), 2, 8, 8)).astype(np.uint16)
    with h5py.File(path, "w") as f:
        f["data"] = values
        f["date"] = np.array(dates)
    return path


# daily frames: 220 days give 80/10/10 splits of >= 20 days (one 5 -> 15 window each); half-hour: 8 days;
# OpenSTL's TaxiBJ (4 -> 4): DeepST's last 28 days as test and the 28 before as validation, so 57 days
@pytest.mark.parametrize(
    "dataset,interval,days,frames",
    [("taxibj_plus", "day", 220, (5, 15)), ("taxibj_plus_30min", "30min", 8, (5, 15)), ("taxibj", None, 57, (4, 4))],
)
def test_taxibj_presets(monkeypatch, tmp_path, dataset, interval, days, frames):
    t_in, t_out, c = _preset_frames(dataset)
    assert (t_in, t_out, c) == (*frames, 2)  # Table 2 for TaxiBJ+
    path = _taxibj_plus_file(tmp_path / "TaxiBJ.h5", days)
    spec, data = _run(monkeypatch, tmp_path, dataset, path)
    assert spec["in_shape"] == [t_in, 2, 8, 8] and spec["out_frames"] == t_out
    assert data["interval"] == interval
    assert data["splits"] == (None if dataset == "taxibj" else [0.8, 0.1, 0.1])


# ----------------------------------------------------------------------------- RBC
def test_rbc_preset_from_an_array_file(monkeypatch, tmp_path):
    """An RBC series ``(time, 1, H, W)`` (here 260 frames of 8 x 24; Table 2: 32 x 480), 13 -> 12 frames,
    with the VAN teacher row of Table 5."""
    t_in, t_out, c = _preset_frames("rbc")
    assert (t_in, t_out, c) == (13, 12, 1)
    path = tmp_path / "rbc.npy"
    np.save(path, np.random.default_rng(2).standard_normal((260, 1, 8, 24)).astype(np.float32))
    spec, _ = _run(monkeypatch, tmp_path, "rbc", path, stages=VAN)
    assert spec["in_shape"] == [13, 1, 8, 24] and spec["out_frames"] == 12
    teacher = load_checkpoint(tmp_path / "out" / "t_van" / "best.pt")["model_spec"]
    assert teacher["name"] == "simvp" and teacher["cfg"]["translator"] == "van"
