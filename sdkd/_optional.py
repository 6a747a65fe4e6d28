"""Optional dependencies: which ``sdkd[extra]`` installs each, so a missing one is reported as such.

The extras are those of ``pyproject.toml`` (``[project.optional-dependencies]``).
"""

from __future__ import annotations

# top-level module -> the extra that installs it
EXTRAS: dict[str, str] = {
    "matplotlib": "plot",
    "scipy": "data",
    "h5py": "data",
    "xarray": "data",
    "h5netcdf": "data",
    "netCDF4": "data",  # h5netcdf (in the extra) is the alternative netCDF engine
    "onnx": "export",
    "onnxscript": "export",
    "onnxruntime": "export",
    "triton": "triton",
    "cupy": "cupy",
    "tensorboard": "tensorboard",
}


def install_hint(module: str | None) -> str | None:
    """``pip install 'sdkd[extra]'`` for an optional ``module`` (or one of its submodules), else None."""
    extra = EXTRAS.get((module or "").split(".")[0])
    return f"pip install 'sdkd[{extra}]'" if extra else None


def import_error_message(exc: ImportError) -> str:
    """One line for a failed import: a missing optional package is named with the extra that installs it.

    Messages that already carry an install hint are kept as they are.
    """
    text = str(exc)
    hint = install_hint(exc.name)
    if "pip install" in text or hint is None:
        return text
    package = (exc.name or "").split(".")[0]
    if isinstance(exc, ModuleNotFoundError):
        return f"the optional package {package!r} is not installed: {hint}"
    return f"{text} (the optional package {package!r} is broken; reinstall it: {hint})"
