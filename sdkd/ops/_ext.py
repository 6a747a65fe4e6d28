"""The one place that imports the compiled extension ``sdkd._C`` (xformers ``_cpp_lib`` style).

A missing or broken extension is caught here and remembered, so the C++/CUDA backends can say *why*
they are unavailable instead of failing at import. ``cuda_unavailable_reason()`` also tells a
build without CUDA from a CUDA build on a machine without a usable GPU.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from types import ModuleType

import torch

try:
    from sdkd import _C  # type: ignore[attr-defined]

    _IMPORT_ERROR: str | None = None
except ImportError as exc:  # not built (SDKD_NO_EXT=1, no compiler) or built for another Python
    _C = None
    _IMPORT_ERROR = f"{type(exc).__name__}: {exc}"


# The probes below answer for the process (the build, the installed packages, the devices): torch.compile
# takes their results as constants instead of tracing into the extension (a pybind call breaks a full graph).
@torch.compiler.assume_constant_result
def triton_installed() -> bool:
    """Whether ``import triton`` can work."""
    return _triton_found()


@functools.cache
def _triton_found() -> bool:  # cached: the module search costs ~0.1 ms, the dispatchers ask per call
    import importlib.util

    return importlib.util.find_spec("triton") is not None


def extension() -> ModuleType | None:
    """The ``sdkd._C`` module, or None when it could not be imported."""
    return _C


def package_dir() -> Path:
    """The folder ``sdkd`` was imported from (site-packages, or a source checkout)."""
    return Path(__file__).resolve().parents[1]


@functools.cache
def source_checkout() -> Path | None:
    """The root of the source checkout ``sdkd`` was imported from, or None for an installed copy.

    A checkout is recognised by the build script and C++ sources next to the package: inside it,
    ``import sdkd`` (cwd first on ``sys.path``, or pytest's root ``conftest.py``) shadows an installed
    copy, and the extension exists there only after an in-place build (``pip install -e .``)."""
    root = package_dir().parent
    return root if (root / "setup.py").is_file() and (root / "csrc").is_dir() else None


def not_built_message() -> str:
    """What every message about a missing ``sdkd._C`` says: in a checkout, that the checkout shadows any
    installed copy and how to build in place; otherwise how to reinstall with a compiler."""
    checkout = source_checkout()
    if checkout is not None:
        return (
            f"sdkd was imported from the source checkout at {checkout}, where the extension is not built: "
            "`pip install -e .` builds it in place, or run from outside the checkout"
        )
    return "the compiled extension sdkd._C is not built; reinstall with a C++ compiler (pip install .)"


@torch.compiler.assume_constant_result
def unavailable_reason(symbol: str | None = None) -> str | None:
    """Why ``sdkd._C`` (or ``sdkd._C.<symbol>``) cannot be used, or None when it can."""
    if _C is None:
        detail = f" ({_IMPORT_ERROR})" if os.environ.get("SDKD_MORE_DETAILS") == "1" else ""
        return not_built_message() + detail
    if symbol is not None and not hasattr(_C, symbol):
        rebuild = "pip install -e . in the checkout" if source_checkout() else "pip install ."
        return f"sdkd._C has no {symbol!r} (an outdated build: rebuild the extension with {rebuild})"
    return None


def import_error() -> str | None:
    """The ImportError text from loading ``sdkd._C`` (None when it loaded)."""
    return _IMPORT_ERROR


@functools.lru_cache(maxsize=1)
def cuda_status() -> tuple[int, int, str]:
    """``(device_count, error_code, error_name)`` from the extension's CUDA runtime (-1: no CUDA part)."""
    if _C is None or not hasattr(_C, "cuda_status"):
        return 0, -1, unavailable_reason("cuda_status") or "sdkd._C has no cuda_status"
    count, code, name = _C.cuda_status()
    return int(count), int(code), str(name)


@torch.compiler.assume_constant_result
def cuda_unavailable_reason() -> str | None:
    """Why the extension's CUDA kernels cannot run here, or None when they can."""
    why = unavailable_reason("has_cuda")
    if why:
        return why
    if not _C.has_cuda():
        return "sdkd._C was built without CUDA (nvcc not found at build time, or SDKD_NO_CUDA=1)"
    count, code, name = cuda_status()
    if code != 0:
        return f"sdkd._C was built with CUDA but no usable GPU: {name} ({code})"
    if count == 0:
        return "sdkd._C was built with CUDA but no GPU is visible"
    return None


def compiled_cuda_archs() -> tuple[int, ...] | None:
    """The CUDA architectures ``sdkd._C`` was compiled for (10 * major + minor: SASS for each, PTX for the
    largest), or None when the extension cannot tell (built without CUDA, or before it exported them)."""
    archs = getattr(_C, "cuda_archs", None)
    if archs is None:
        return None
    return tuple(int(a) for a in archs()) or None


def arch_unavailable_reason(capability: tuple[int, int], archs: tuple[int, ...] | None) -> str | None:
    """Why kernels compiled for ``archs`` cannot run on a GPU of compute ``capability``, or None when they can:
    a SASS build runs on its major version at the same or a higher minor; the PTX of the largest arch is JIT-
    compiled for any newer GPU. Unknown ``archs`` (None) are trusted."""
    if not archs:
        return None
    cc = 10 * capability[0] + capability[1]
    if any(a // 10 == capability[0] and a <= cc for a in archs) or max(archs) <= cc:
        return None
    listed = ", ".join(f"sm_{a}" for a in archs)
    return (
        f"sdkd._C was compiled for {listed} (PTX compute_{max(archs)}), which cannot run on this GPU "
        f"(sm_{cc}); rebuild with SDKD_CUDA_ARCHS={cc // 10}.{cc % 10} pip install ."
    )


@functools.lru_cache(maxsize=16)
def _device_arch_reason(index: int) -> str | None:
    return arch_unavailable_reason(torch.cuda.get_device_capability(index), compiled_cuda_archs())


def cuda_device_unavailable_reason(device: torch.device) -> str | None:
    """Why the extension's CUDA kernels cannot run on ``device`` (a GPU older than every compiled arch falls back
    to another backend instead of failing at launch), or None when they can."""
    why = cuda_unavailable_reason()
    if why or device.type != "cuda":
        return why
    return _device_arch_reason(device.index if device.index is not None else torch.cuda.current_device())


def require_cuda() -> None:
    """Raise ``RuntimeError`` with the reason when the CUDA kernels cannot run."""
    why = cuda_unavailable_reason()
    if why:
        raise RuntimeError(why)


def summary() -> dict[str, object]:
    """What ``sdkd info`` reports about the extension."""
    if _C is None:
        return {"built": False, "reason": unavailable_reason()}
    return {
        "built": True,
        "cuda_compiled": bool(getattr(_C, "has_cuda", lambda: False)()),
        "cuda_usable": cuda_unavailable_reason() is None,
        "cuda_reason": cuda_unavailable_reason(),
        "openmp_threads": _C.openmp_threads(),
    }
