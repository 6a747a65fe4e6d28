"""WeatherBench 5.625 deg (32 x 64): yearly netCDF files per variable, split by year.

Layout (pangeo-data/WeatherBench): ``<root>/<long_name>/<long_name>_<year>_5.625deg.nc`` with
the ERA5 short name inside (``t2m`` in ``2m_temperature``...). Defaults follow OpenSTL's
single-variable setting (12 h -> 12 h at 1 h, train 2010-2015, val 2016, test 2017-2018), but
the validation split really is 2016 (OpenSTL validates on the test years) and every split is
z-scored with the training years' statistics, one mean/std per variable (DESIGN.md section 3).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._io import netcdf_engine
from .windows import (
    SPLITS,
    RunningStats,
    WindowDataset,
    check_finite,
    check_numeric_dtype,
    check_split,
    check_stats,
    gap_segments,
)

# ERA5 short name -> WeatherBench folder name.
VARIABLES = {
    "t2m": "2m_temperature",
    "tcc": "total_cloud_cover",
    "r": "relative_humidity",
    "u10": "10m_u_component_of_wind",
    "v10": "10m_v_component_of_wind",
    "z": "geopotential",
    "t": "temperature",
    "tp": "total_precipitation",
    "tisr": "toa_incident_solar_radiation",
    "q": "specific_humidity",
    "u": "u_component_of_wind",
    "v": "v_component_of_wind",
    "pv": "potential_vorticity",
    "vo": "vorticity",
}
_LONG_TO_SHORT = {v: k for k, v in VARIABLES.items()}
DEFAULT_YEARS = {"train": tuple(range(2010, 2016)), "val": (2016,), "test": (2017, 2018)}
WHERE = "WeatherBenchDataset"


def short_name(variable: str) -> str:
    """ERA5 short name for a short or long (folder) name; ``KeyError`` listing the known ones."""
    if variable in VARIABLES:
        return variable
    if variable in _LONG_TO_SHORT:
        return _LONG_TO_SHORT[variable]
    raise KeyError(f"{WHERE}: unknown variable {variable!r}; known short names: {sorted(VARIABLES)}")


def _check_years(years: Mapping[str, Iterable[int]]) -> dict[str, tuple[int, ...]]:
    if set(years) != set(SPLITS):
        raise ValueError(f"{WHERE}: years must map exactly {SPLITS} to years, got keys {sorted(years)}")
    out = {s: tuple(sorted(int(y) for y in years[s])) for s in SPLITS}
    seen: dict[int, str] = {}
    for s, ys in out.items():
        for y in ys:
            if y in seen:
                raise ValueError(f"{WHERE}: year {y} is in both the {seen[y]!r} and {s!r} splits")
            seen[y] = s
    if not out["train"]:
        raise ValueError(f"{WHERE}: the train split has no years")
    return out


class WeatherBenchDataset(WindowDataset):
    """``(x, y)`` windows of one or more WeatherBench variables stacked as channels.

    ``root``: the resolution folder holding one sub-folder per variable. ``variables``: short
    (``t2m tcc r u10 v10 z t tp ...``) or folder names. ``level``: pressure level taken from
    variables with a ``level`` dimension (e.g. ``r``); ``None`` takes the last stored level
    (OpenSTL's choice). ``years``: ``{"train": [...], "val": [...], "test": [...]}``, disjoint.
    Windows are ``input_frames`` -> ``output_frames`` frames ``step`` records apart, starting
    every ``stride`` records, and never span a gap in the time axis (e.g. a missing year).
    Exposes ``variables``, ``lat``, ``lon`` and ``time`` (the split's time stamps).
    """

    def __init__(
        self,
        root: str | Path,
        variables: Sequence[str] | str = ("t2m",),
        split: str = "train",
        years: Mapping[str, Iterable[int]] | None = None,
        input_frames: int = 12,
        output_frames: int = 12,
        step: int = 1,
        *,
        stride: int = 1,
        level: float | None = None,
        resolution: str = "5.625deg",
        stats: Any = None,
    ):
        check_split(split, WHERE)
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"{WHERE}: root directory not found: {self.root}")
        if isinstance(variables, str):
            variables = (variables,)
        if not variables:
            raise ValueError(f"{WHERE}: variables must name at least one variable")
        self.variables = tuple(short_name(v) for v in variables)
        if len(set(self.variables)) != len(self.variables):
            raise ValueError(f"{WHERE}: variables contain duplicates: {self.variables}")
        self.years = _check_years(DEFAULT_YEARS if years is None else years)
        if not self.years[split]:
            raise ValueError(f"{WHERE}: the {split} split has no years")
        self.level = level
        self.resolution = resolution
        self._engine = netcdf_engine()
        self.lat: np.ndarray | None = None
        self.lon: np.ndarray | None = None

        needed = set(self.years[split]) | (set(self.years["train"]) if stats is None else set())
        missing = [self.file(v, y) for y in sorted(needed) for v in self.variables if not self.file(v, y).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{WHERE}: {len(missing)} file(s) missing, first {missing[0]} "
                f"(expected <root>/<long_name>/<long_name>_<year>_{resolution}.nc)"
            )
        blocks, hours = [], []
        for year in self.years[split]:
            block, h = self._read_year(year)
            check_finite([block], f"{WHERE}: year {year}")
            blocks.append(block)
            hours.append(h)
        data = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
        hours = np.concatenate(hours)
        C = len(self.variables)
        if stats is not None:
            mean, std = check_stats(stats, C, WHERE)
        else:
            rs = RunningStats(C, per_channel=True)
            for year in self.years["train"]:
                block = blocks[self.years[split].index(year)] if split == "train" else self._read_year(year)[0]
                if split != "train":
                    check_finite([block], f"{WHERE}: train year {year}")
                rs.update(block)
            mean, std = rs.result(WHERE)
        self.time = hours.astype("datetime64[h]")
        spacing = int(np.median(np.diff(hours))) if hours.size > 1 else 1
        if spacing <= 0:
            raise ValueError(f"{WHERE}: time stamps of the {split} years are not increasing")
        segments = [data[a:b] for a, b in gap_segments(hours, spacing)]
        super().__init__(
            segments,
            input_frames=input_frames,
            output_frames=output_frames,
            mean=mean,
            std=std,
            split=split,
            stride=stride,
            step=step,
            name=WHERE,
        )

    def file(self, variable: str, year: int) -> Path:
        """Path of one variable's file for one year."""
        long = VARIABLES[short_name(variable)]
        return self.root / long / f"{long}_{int(year)}_{self.resolution}.nc"

    def _read_var(self, variable: str, year: int) -> tuple[np.ndarray, np.ndarray]:
        import xarray as xr

        path = self.file(variable, year)
        if not path.is_file():
            raise FileNotFoundError(
                f"{WHERE}: missing file {path} (expected <root>/<long_name>/<long_name>_<year>_{self.resolution}.nc)"
            )
        try:
            ds = xr.open_dataset(path, engine=self._engine)
        except Exception as e:  # truncated or not netCDF
            raise ValueError(f"{WHERE}: cannot read {path} (truncated or not netCDF): {type(e).__name__}: {e}") from e
        with ds:
            names = [str(n) for n in ds.data_vars]
            if variable in names:
                da = ds[variable]
            elif len(names) == 1:
                da = ds[names[0]]
            else:
                raise KeyError(f"{WHERE}: variable {variable!r} not found in {path}; available: {names}")
            if "level" in da.dims:
                if self.level is None:
                    da = da.isel(level=-1)
                else:
                    levels = ds["level"].values.tolist()
                    if self.level not in levels:
                        raise KeyError(f"{WHERE}: level {self.level} not in {path}; available levels: {levels}")
                    da = da.sel(level=self.level)
            if "time" not in da.dims or da.ndim != 3:
                raise ValueError(f"{WHERE}: {path}: {variable!r} must have dims (time, lat, lon), got {da.dims}")
            check_numeric_dtype(da.dtype, f"{WHERE}: {path}")
            da = da.transpose("time", ...)
            spatial = [d for d in da.dims if d != "time"]
            try:
                values = np.asarray(da.values, dtype=np.float32)
                time = np.asarray(ds["time"].values).astype("datetime64[h]").astype(np.int64)
            except Exception as e:  # data truncated after a readable header
                raise ValueError(f"{WHERE}: cannot read {path} (truncated?): {type(e).__name__}: {e}") from e
            if self.lat is None:
                self.lat = np.asarray(ds[spatial[0]].values) if spatial[0] in ds.coords else None
                self.lon = np.asarray(ds[spatial[1]].values) if spatial[1] in ds.coords else None
        return values, time

    def _read_year(self, year: int) -> tuple[np.ndarray, np.ndarray]:
        """All variables of one year stacked: ``(T, C, H, W)`` float32 and hours since epoch."""
        fields, time0 = [], None
        for v in self.variables:
            values, time = self._read_var(v, year)
            if time0 is None:
                time0 = time
            elif time.shape != time0.shape or not np.array_equal(time, time0):
                raise ValueError(
                    f"{WHERE}: {self.file(v, year)} has different time stamps than {self.file(self.variables[0], year)}"
                )
            if fields and values.shape[1:] != fields[0].shape[1:]:
                raise ValueError(f"{WHERE}: {self.file(v, year)} grid {values.shape[1:]} != {fields[0].shape[1:]}")
            fields.append(values)
        return np.stack(fields, axis=1), time0
