"""One dispatch policy for every op (issue 18, item 3): the environment switches and the Triton rule live in
``sdkd.ops._dispatch``, the band-count limit has one source that csrc agrees with, and the CUDA probe checks the
GPU's compute capability against the compiled architectures."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from sdkd.ops import _dispatch
from sdkd.ops._ext import arch_unavailable_reason, compiled_cuda_archs, extension
from sdkd.ops.spectral_loss.plan import MAX_KERNEL_BANDS

ROOT = Path(__file__).resolve().parents[1]
OPS = ROOT / "sdkd" / "ops"


def test_band_limit_has_one_source_that_csrc_agrees_with():
    header = (ROOT / "csrc" / "cuda" / "spectral_loss.h").read_text()
    (value,) = re.findall(r"#define\s+SDKD_SPECTRAL_MAX_BANDS\s+(\d+)", header)
    assert int(value) == MAX_KERNEL_BANDS
    for path in [*(ROOT / "kernels").glob("*.py"), *OPS.rglob("*.py")]:
        if path.name != "plan.py":
            assert not re.search(r"^\s*MAX_\w*BANDS\s*=", path.read_text(), re.M), f"a second band limit in {path}"


def test_op_files_read_no_dispatch_environment_themselves():
    """SDKD_BACKEND, TRITON_INTERPRET and SDKD_AUTOTUNE are read in _dispatch / _autotune only."""
    own = {"_dispatch.py", "_autotune.py", "_tuning_cache.py", "_ext.py"}
    for path in OPS.rglob("*.py"):
        if path.name not in own:
            text = path.read_text()
            assert not re.search(r"environ.*(SDKD_BACKEND|TRITON_INTERPRET|SDKD_AUTOTUNE)|\bENV_VAR\b", text), path
            assert "cuda_stream" not in text, f"{path}: use _dispatch.raw_stream"


@pytest.mark.parametrize(
    "capability,archs,ok",
    [
        ((8, 6), (80, 90), True),  # sm_80 SASS runs on 8.6
        ((9, 0), (80, 90), True),
        ((10, 0), (80, 90), True),  # PTX of compute_90 is JIT-compiled for a newer GPU
        ((7, 5), (80, 90), False),  # older than every compiled arch: fall back, never fail at launch
        ((8, 0), (86,), False),  # sm_86 SASS does not run on 8.0, and its PTX is newer
        ((7, 0), None, True),  # the extension cannot tell: trusted
    ],
)
def test_arch_probe(capability, archs, ok):
    why = arch_unavailable_reason(capability, archs)
    assert (why is None) == ok
    if not ok:
        assert f"sm_{10 * capability[0] + capability[1]}" in why and "SDKD_CUDA_ARCHS" in why


def test_extension_exports_its_archs_when_built_with_cuda():
    ext = extension()
    if ext is None or not hasattr(ext, "cuda_archs"):
        pytest.skip("sdkd._C not built (or built before it exported its archs)")
    archs = compiled_cuda_archs()
    if not ext.has_cuda():
        assert archs is None
    else:
        assert archs and all(isinstance(a, int) and a >= 30 for a in archs)


def test_triton_rule(monkeypatch):
    if not _dispatch.triton_installed():
        assert _dispatch.triton_reasons(torch.zeros(1)) == ["triton is not installed"]
        return
    x = torch.zeros(1)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert _dispatch.triton_reasons(x, "auto")  # auto never takes the interpreter
    assert _dispatch.triton_reasons(x, "triton") == [] and _dispatch.triton_reasons(x, "triton:box") == []
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert "TRITON_INTERPRET=1" in _dispatch.triton_reasons(x, "triton")[0]


def test_requested_backend(monkeypatch):
    monkeypatch.delenv("SDKD_BACKEND", raising=False)
    assert _dispatch.requested_backend("auto") == "auto"
    monkeypatch.setenv("SDKD_BACKEND", "cpu:box")
    assert _dispatch.requested_backend("auto") == "cpu:box" and _dispatch.requested_backend("reference") == "reference"
    assert _dispatch.backend_name("cpu:box") == "cpu"


def test_every_op_defaults_check_to_the_one_policy():
    """``check`` means the same for every op (finiteness asserted on the device) and has one default."""
    import inspect

    from sdkd.ops import a2d_weights, attention, capped_simplex_projection, spectral_loss
    from sdkd.ops._dispatch import CHECK_DEFAULT

    for fn in (spectral_loss, attention, capped_simplex_projection, a2d_weights):
        assert inspect.signature(fn).parameters["check"].default is CHECK_DEFAULT, fn.__name__
