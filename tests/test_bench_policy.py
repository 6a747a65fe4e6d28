"""The speed suites' backend rule (``bench/_backend_policy.py``, issue 23): a fast backend this machine should have
fails its cases when missing, ``--reference-only`` lets them skip, expected skips are one summary line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import _backend_policy as policy  # noqa: E402

sys.path.remove(str(ROOT / "bench"))


def test_expected_backends_follow_the_machine():
    assert policy.expected_fast_backends(has_compiler=False, has_gpu=False) == []
    assert policy.expected_fast_backends(has_compiler=True, has_gpu=False) == ["cpu"]
    assert policy.expected_fast_backends(has_compiler=True, has_gpu=True) == ["cpu", "cuda", "triton"]


def test_backend_of_a_bench_case():
    assert policy.backend_of({"backend": "cuda:box", "shape": (1,)}) == "cuda"
    assert policy.backend_of({"impl": "fused"}) == "triton"  # bench_attention's fused block is the Triton backend
    assert policy.backend_of({"impl": "sdpa-flash"}) == "sdpa-flash"
    assert policy.backend_of({"name": "unet"}) is None


def test_skip_summary_is_one_line_most_frequent_first():
    line = policy.skip_summary(["no CUDA GPU"] * 3 + ["triton: benchmarked on GPU only"])
    assert line == (
        "4 case(s) skipped (expected on this machine): 3 x no CUDA GPU; 1 x triton: benchmarked on GPU only"
    )
    assert "\n" not in policy.skip_summary(["x" * 500])


def _bench(*extra: str) -> subprocess.CompletedProcess:
    """bench_capped_simplex's cpu and reference cases at the smallest shape, in a process where ``sdkd._C``
    cannot be imported (an unbuilt checkout), timings disabled."""
    code = (
        "import sys, pytest\n"
        "sys.modules['sdkd._C'] = None  # import sdkd._C now fails, as in a checkout that was never built\n"
        f"sys.exit(pytest.main(['bench/bench_capped_simplex.py', '--benchmark-disable', '-q', '-p', "
        f"'no:cacheprovider', '-k', 'test_projection and 65536-2- and (cpu or reference)', *{list(extra)!r}]))\n"
    )
    env = {**os.environ, "SDKD_BENCH_QUICK": "1"}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env)


@pytest.mark.skipif(policy.cxx_compiler() is None, reason="no C++ compiler: the cpu backend is not expected here")
def test_missing_cpu_backend_fails_unless_reference_only():
    r = _bench()
    assert r.returncode == 1, r.stdout + r.stderr
    assert "1 failed, 1 passed" in r.stdout
    assert "the cpu backend, which this machine should have, is missing: sdkd was imported from the source " in r.stdout
    assert "`pip install -e .` builds it in place" in r.stdout and "--reference-only" in r.stdout

    r = _bench("--reference-only")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed, 1 skipped" in r.stdout
    assert "bench: 1 case(s) skipped (expected on this machine, or --reference-only): 1 x cpu: sdkd was" in r.stdout
    assert "SKIPPED [" not in r.stdout  # -ra's one line per skipped case is replaced by the summary
