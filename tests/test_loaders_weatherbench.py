"""WeatherBenchDataset on tiny fake yearly netCDF files written with xarray."""

import zlib

import numpy as np
import pytest
import torch

xr = pytest.importorskip("xarray")
pd = pytest.importorskip("pandas")

from sdkd.data import WeatherBenchDataset  # noqa: E402

HOURS, NLAT, NLON = 30, 4, 8
YEARS = {"train": [2010, 2011], "val": [2012], "test": [2013]}
LEVELS = [300, 500, 850]


def _values(short, year):
    """Deterministic field per (variable, year) so tests can recompute the statistics."""
    rng = np.random.default_rng(zlib.crc32(f"{short}{year}".encode()))
    base = {"t2m": 280.0, "tcc": 0.5, "r": 60.0}[short]
    scale = {"t2m": 5.0, "tcc": 0.2, "r": 10.0}[short]
    shape = (HOURS, len(LEVELS), NLAT, NLON) if short == "r" else (HOURS, NLAT, NLON)
    return (base + scale * rng.standard_normal(shape)).astype(np.float32)


def _write_year(root, long, short, year, values=None):
    values = _values(short, year) if values is None else values
    coords = {
        "time": pd.date_range(f"{year}-01-01", periods=HOURS, freq="h"),
        "lat": np.linspace(-87.1875, 87.1875, NLAT),
        "lon": np.arange(NLON) * 360.0 / NLON,
    }
    dims = ("time", "lat", "lon")
    if short == "r":
        coords["level"] = LEVELS
        dims = ("time", "level", "lat", "lon")
    folder = root / long
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{long}_{year}_5.625deg.nc"
    xr.Dataset({short: (dims, values)}, coords=coords).to_netcdf(path)
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("wb") / "5.625deg"
    for long, short in (("2m_temperature", "t2m"), ("total_cloud_cover", "tcc"), ("relative_humidity", "r")):
        for year in (2010, 2011, 2012, 2013):
            _write_year(root, long, short, year)
    return root


def test_windows_and_per_variable_train_stats(root):
    ds = WeatherBenchDataset(root, ("t2m", "tcc"), "test", years=YEARS, input_frames=4, output_frames=3)
    assert ds.in_shape == (4, 2, NLAT, NLON) and ds.out_frames == 3 and ds.split == "test"
    assert ds.variables == ("t2m", "tcc") and len(ds) == HOURS - 7 + 1
    train = {v: np.concatenate([_values(v, y) for y in YEARS["train"]]).astype(np.float64) for v in ("t2m", "tcc")}
    assert np.allclose(ds.mean.numpy(), [train["t2m"].mean(), train["tcc"].mean()])
    assert np.allclose(ds.std.numpy(), [train["t2m"].std(), train["tcc"].std()])
    x, y = ds[5]
    raw = np.stack([_values("t2m", 2013), _values("tcc", 2013)], axis=1)[5:12]
    assert np.allclose(ds.denormalize(torch.cat([x, y])).numpy(), raw, atol=1e-3)
    assert np.allclose(x[:, 0].numpy(), (raw[:4, 0] - train["t2m"].mean()) / train["t2m"].std(), atol=1e-4)
    assert np.allclose(ds.lat, np.linspace(-87.1875, 87.1875, NLAT)) and ds.lon.shape == (NLON,)
    assert str(ds.time[0]) == "2013-01-01T00"


def test_long_names_default_years_step_and_year_boundary(root):
    # consecutive years would join; 2010 and 2011 here are not consecutive in time (30 h each), so
    # the train split is two segments and no window crosses the gap
    ds = WeatherBenchDataset(root, "2m_temperature", "train", years=YEARS, input_frames=2, output_frames=2, step=3)
    assert ds.variables == ("t2m",) and len(ds.segments) == 2
    span = (2 + 2 - 1) * 3 + 1
    assert len(ds) == 2 * (HOURS - span + 1)
    x, y = ds[1]
    raw = _values("t2m", 2010)[1 : 1 + span : 3]
    assert np.allclose(ds.denormalize(torch.cat([x, y]))[:, 0].numpy(), raw, atol=1e-3)
    with pytest.raises(FileNotFoundError, match="3 file.s. missing, first .*2m_temperature_2014_5.625deg.nc"):
        WeatherBenchDataset(root, "t2m", "val", input_frames=2, output_frames=2)  # default years 2010-2018


def test_level_selection(root):
    last = WeatherBenchDataset(root, "r", "val", years=YEARS, input_frames=2, output_frames=2)
    mid = WeatherBenchDataset(root, "r", "val", years=YEARS, input_frames=2, output_frames=2, level=500)
    x_last, _ = last[0]
    x_mid, _ = mid[0]
    assert np.allclose(last.denormalize(x_last)[:, 0].numpy(), _values("r", 2012)[:2, -1], atol=1e-3)
    assert np.allclose(mid.denormalize(x_mid)[:, 0].numpy(), _values("r", 2012)[:2, 1], atol=1e-3)
    train_mid = np.concatenate([_values("r", y)[:, 1] for y in YEARS["train"]]).astype(np.float64)
    assert np.allclose(mid.mean.numpy(), [train_mid.mean()])
    with pytest.raises(KeyError, match="level 700"):
        WeatherBenchDataset(root, "r", "val", years=YEARS, input_frames=2, output_frames=2, level=700)


def test_splits_must_be_disjoint_and_known(root):
    with pytest.raises(ValueError, match="year 2012 is in both"):
        WeatherBenchDataset(root, "t2m", years={"train": [2010], "val": [2012], "test": [2012]})
    with pytest.raises(ValueError, match="years must map"):
        WeatherBenchDataset(root, "t2m", years={"train": [2010], "test": [2012]})
    with pytest.raises(KeyError, match="unknown variable 'sst'"):
        WeatherBenchDataset(root, ("t2m", "sst"), years=YEARS)
    with pytest.raises(ValueError, match="split must be one of"):
        WeatherBenchDataset(root, "t2m", "dev", years=YEARS)
    with pytest.raises(FileNotFoundError, match="root directory"):
        WeatherBenchDataset(root / "nowhere", "t2m", years=YEARS)
    with pytest.raises(ValueError, match="too short"):
        WeatherBenchDataset(root, "t2m", "val", years=YEARS, input_frames=20, output_frames=20)


def test_bad_files_raise_clear_errors(tmp_path):
    root = tmp_path / "wb"
    for year in (2010, 2011):
        _write_year(root, "2m_temperature", "t2m", year)
    bad = _values("t2m", 2012)
    bad[3, 1, 1] = np.nan
    _write_year(root, "2m_temperature", "t2m", 2012, bad)
    good = _write_year(root, "total_cloud_cover", "tcc", 2010)
    (root / "total_cloud_cover" / "total_cloud_cover_2011_5.625deg.nc").write_bytes(good.read_bytes()[:400])
    years = {"train": [2010], "val": [2011], "test": [2012]}
    with pytest.raises(ValueError, match="year 2012.*NaN or Inf"):
        WeatherBenchDataset(root, "t2m", "test", years=years, input_frames=2, output_frames=2)
    with pytest.raises(ValueError, match="total_cloud_cover_2011_5.625deg.nc"):
        WeatherBenchDataset(root, "tcc", "val", years=years, input_frames=2, output_frames=2)
    # a file whose variable has another name and is not alone
    path = root / "10m_u_component_of_wind" / "10m_u_component_of_wind_2010_5.625deg.nc"
    path.parent.mkdir()
    xr.Dataset(
        {"a": (("time", "lat", "lon"), np.zeros((3, 2, 2))), "b": (("time", "lat", "lon"), np.zeros((3, 2, 2)))},
        coords={"time": pd.date_range("2010-01-01", periods=3, freq="h")},
    ).to_netcdf(path)
    with pytest.raises(KeyError, match="'u10' not found"):
        WeatherBenchDataset(root, "u10", "train", years=years, input_frames=1, output_frames=1)
