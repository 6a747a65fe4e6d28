"""sdkd: spectral-decoupled knowledge distillation for spatiotemporal forecasters."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

__version__ = "0.1.0"


def _alias_source_tree_kernels() -> None:
    """In a source checkout the Triton kernels live in ``../kernels``; installed they are
    ``sdkd/kernels``. Make ``import sdkd.kernels`` work in both cases."""
    here = Path(__file__).resolve().parent
    if (here / "kernels").is_dir() or "sdkd.kernels" in sys.modules:
        return
    src = here.parent / "kernels"
    if not (src / "__init__.py").is_file():
        return
    spec = importlib.util.spec_from_file_location(
        "sdkd.kernels", src / "__init__.py", submodule_search_locations=[str(src)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["sdkd.kernels"] = module
    spec.loader.exec_module(module)
    globals()["kernels"] = module


_alias_source_tree_kernels()


def __getattr__(name: str):
    """Lazy top-level exports, so that ``import sdkd`` stays light."""
    if name == "Forecaster":
        from .forecast import Forecaster

        return Forecaster
    raise AttributeError(f"module 'sdkd' has no attribute {name!r}")
