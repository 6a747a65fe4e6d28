"""Which fast backends this machine should have, and which of them are missing (the speed suites' rule).

A speed suite that quietly skips every fast backend measures only the reference and looks green (issue 23:
a checkout whose extension was never built shadows the installed copy). So a case of a backend this
machine should have *fails* when the backend is missing, with the reason and the fix:

- ``cpu``: wherever a C++ compiler exists (``pip install .`` / ``pip install -e .`` builds the extension);
- ``cuda`` and ``triton``: on a machine with a CUDA GPU.

``--reference-only`` (an explicit switch) lets such cases skip instead. Skips that are expected here (a GPU
case on a CPU machine, the Triton interpreter) stay skips.
"""

from __future__ import annotations

import functools
import shutil
import sysconfig

REFERENCE_ONLY_FLAG = "--reference-only"
# a bench case's implementation name -> the op backend it measures (bench_attention's fused block is Triton)
_ALIASES = {"fused": "triton"}


@functools.cache
def cxx_compiler() -> str | None:
    """A C++ compiler on this machine (the one Python's build uses first), or None."""
    configured = (sysconfig.get_config_var("CXX") or "").split()
    for name in [*configured[:1], "c++", "g++", "clang++", "cl"]:
        path = shutil.which(name)
        if path:
            return path
    return None


def expected_fast_backends(has_compiler: bool, has_gpu: bool) -> list[str]:
    """The fast backends a machine with (or without) a C++ compiler and a CUDA GPU should have."""
    return (["cpu"] if has_compiler else []) + (["cuda", "triton"] if has_gpu else [])


def missing_fast_backends() -> dict[str, str]:
    """``{backend: why it is missing}`` for the expected fast backends that cannot run here."""
    import torch

    from sdkd.ops import _ext

    has_gpu = torch.cuda.is_available()
    reasons = {
        "cpu": lambda: _ext.unavailable_reason(),
        "cuda": lambda: _ext.cuda_unavailable_reason(),
        "triton": lambda: None if _ext.triton_installed() else "triton is not installed (pip install triton)",
    }
    missing = {}
    for backend in expected_fast_backends(cxx_compiler() is not None, has_gpu):
        why = reasons[backend]()
        if why:
            missing[backend] = why
    return missing


def backend_of(params: dict) -> str | None:
    """The backend a parametrized bench case measures (``backend`` or ``impl``; ``cuda:box`` -> ``cuda``)."""
    value = params.get("backend", params.get("impl"))
    if not isinstance(value, str):
        return None
    name = value.partition(":")[0]
    return _ALIASES.get(name, name)


def failure_message(backend: str, why: str) -> str:
    return (
        f"the {backend} backend, which this machine should have, is missing: {why}. "
        f"Fix that, or pass {REFERENCE_ONLY_FLAG} to skip its cases and measure the reference alone"
    )


def skip_summary(reasons: list[str], reference_only: bool = False, width: int = 70) -> str:
    """One line for all skipped cases: their count and each distinct reason's count, most frequent first."""
    counts: dict[str, int] = {}
    for r in reasons:
        short = r if len(r) <= width else r[: width - 3] + "..."
        counts[short] = counts.get(short, 0) + 1
    parts = [f"{n} x {r}" for r, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    why = f"expected on this machine, or {REFERENCE_ONLY_FLAG}" if reference_only else "expected on this machine"
    return f"{len(reasons)} case(s) skipped ({why}): " + "; ".join(parts)
