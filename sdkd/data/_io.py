"""File readers shared by the loaders: array files, netCDF engine choice, FNO ``.mat``.

Heavy optional dependencies (scipy, h5py, xarray) are imported inside the functions, so
importing ``sdkd.data`` stays cheap. Every failure is re-raised naming the file; a missing reader
package raises ``ImportError`` naming the extra that installs it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

ARRAY_SUFFIXES = (".npy", ".npz", ".pt", ".pth", ".h5", ".hdf5", ".nc")


def existing_file(path: str | Path, where: str) -> Path:
    """``path`` as a ``Path``; ``FileNotFoundError`` naming it if it is not a file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{where}: file not found: {p}")
    return p


def netcdf_engine() -> str:
    """The xarray engine to read netCDF with: ``netcdf4`` if installed, else ``h5netcdf``."""
    for module, engine in (("netCDF4", "netcdf4"), ("h5netcdf", "h5netcdf")):
        if importlib.util.find_spec(module) is not None:
            return engine
    raise ImportError("reading netCDF needs xarray with netCDF4 or h5netcdf: pip install 'sdkd[data]'")


def _missing_reader(exc: ImportError, path: Path, where: str) -> ImportError:
    """A reader package that is not installed (or broken) is named with its extra; the file is not blamed."""
    from sdkd._optional import import_error_message

    cls = ModuleNotFoundError if isinstance(exc, ModuleNotFoundError) else ImportError
    return cls(f"{where}: cannot read {path}: {import_error_message(exc)}", name=exc.name)


def _pick(names: list[str], variable: str | None, path: Path, where: str, kind: str) -> str:
    if variable is None:
        if len(names) == 1:
            return names[0]
        raise ValueError(f"{where}: {path} holds {len(names)} {kind}s {names}; pass variable= to choose one")
    if variable not in names:
        raise KeyError(f"{where}: variable {variable!r} not found in {path}; available: {names}")
    return variable


class ArraySource:
    """An array in a file, read by ranges of its leading axis (lazily where the format allows).

    ``shape``/``dtype`` are known without reading the data; ``read(a, b)`` returns a numpy
    array (a memory map for ``.npy``) of rows ``a:b``.
    """

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, read: Callable[[int, int], Any], path: Path):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self._read = read
        self.path = path

    def read(self, a: int, b: int) -> Any:
        try:
            return self._read(a, b)
        except Exception as e:  # re-raised with the file name
            raise ValueError(f"cannot read rows {a}:{b} of {self.path}: {type(e).__name__}: {e}") from e


def open_array(path: str | Path, variable: str | None, where: str) -> ArraySource:
    """Open an array file (``.npy .npz .pt .h5 .nc``); ``variable`` names the array inside
    ``.npz/.pt`` (dict)/``.h5/.nc`` files and may be omitted when there is only one."""
    p = existing_file(path, where)
    suffix = p.suffix.lower()
    if suffix not in ARRAY_SUFFIXES:
        raise ValueError(f"{where}: unsupported file type {suffix!r} for {p}; expected one of {ARRAY_SUFFIXES}")
    try:
        if suffix == ".npy":
            arr = np.load(p, mmap_mode="r")
            return ArraySource(arr.shape, arr.dtype, lambda a, b: arr[a:b], p)
        if suffix == ".npz":
            with np.load(p) as z:
                key = _pick(list(z.files), variable, p, where, "array")
                arr = z[key]
            return ArraySource(arr.shape, arr.dtype, lambda a, b: arr[a:b], p)
        if suffix in (".pt", ".pth"):
            obj = torch.load(p, map_location="cpu", weights_only=True)
            if isinstance(obj, dict):
                names = [k for k, v in obj.items() if isinstance(v, (torch.Tensor, np.ndarray))]
                obj = obj[_pick(names, variable, p, where, "tensor")]
            if not isinstance(obj, (torch.Tensor, np.ndarray)):
                raise TypeError(f"{where}: {p} must hold a tensor or a dict of tensors, got {type(obj).__name__}")
            arr = obj.numpy() if isinstance(obj, torch.Tensor) else obj
            return ArraySource(arr.shape, arr.dtype, lambda a, b: arr[a:b], p)
        if suffix in (".h5", ".hdf5"):
            import h5py

            with h5py.File(p, "r") as f:
                names = [k for k, v in f.items() if isinstance(v, h5py.Dataset)]
                key = _pick(names, variable, p, where, "dataset")
                shape, dtype = f[key].shape, f[key].dtype

            def read_h5(a: int, b: int) -> np.ndarray:
                with h5py.File(p, "r") as f:
                    return f[key][a:b]

            return ArraySource(shape, dtype, read_h5, p)
        import xarray as xr

        engine = netcdf_engine()
        with xr.open_dataset(p, engine=engine) as ds:
            key = _pick(list(map(str, ds.data_vars)), variable, p, where, "variable")
            shape, dtype, dim0 = ds[key].shape, ds[key].dtype, ds[key].dims[0] if ds[key].dims else None

        def read_nc(a: int, b: int) -> np.ndarray:
            with xr.open_dataset(p, engine=engine) as ds:
                return ds[key].isel({dim0: slice(a, b)}).values

        return ArraySource(shape, dtype, read_nc, p)
    except (KeyError, TypeError, FileNotFoundError):
        raise
    except ImportError as e:
        raise _missing_reader(e, p, where) from e
    except ValueError as e:
        if str(e).startswith(where):
            raise
        raise ValueError(f"{where}: cannot read {p} (missing, truncated or not a {suffix} file): {e}") from e
    except Exception as e:  # any reader failure becomes a clear error naming the file
        raise ValueError(f"{where}: cannot read {p} (truncated or not a {suffix} file): {type(e).__name__}: {e}") from e


def read_mat(path: str | Path, variable: str, where: str) -> np.ndarray:
    """Read ``variable`` from a MATLAB file in its MATLAB axis order: scipy for v4-v7.2,
    h5py for v7.3 (HDF5, whose axes are stored reversed, so they are reversed back)."""
    p = existing_file(path, where)
    try:
        import h5py

        if h5py.is_hdf5(p):
            with h5py.File(p, "r") as f:
                if variable not in f:
                    raise KeyError(f"{where}: variable {variable!r} not found in {p}; available: {sorted(f.keys())}")
                return np.transpose(f[variable][()])
        import scipy.io

        data = scipy.io.loadmat(p, variable_names=[variable])
        if variable not in data:
            names = [n for n, *_ in scipy.io.whosmat(p)]
            raise KeyError(
                f"{where}: variable {variable!r} not found in {p}; available: {names} (or the file is truncated)"
            )
        return data[variable]
    except KeyError:
        raise
    except ImportError as e:
        raise _missing_reader(e, p, where) from e
    except Exception as e:  # any reader failure becomes a clear error naming the file
        raise ValueError(f"{where}: cannot read {p} (truncated or not a MATLAB file): {type(e).__name__}: {e}") from e
