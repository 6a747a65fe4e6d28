"""setup.py's build conventions (issue 21 item 10): PyTorch's TORCH_CUDA_ARCH_LIST / MAX_JOBS honoured with the
SDKD_* names as overrides, flags per compiler family, and a failed build that fails the install with what to do."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SETUP = runpy.run_path(str(ROOT / "setup.py"), run_name="setup_under_test")  # helpers only: setup() not called


def test_cuda_archs_sdkd_then_torch_then_default():
    targets = SETUP["cuda_arch_targets"]
    assert targets({}) == (["80", "90"], ["90"])
    assert targets({"TORCH_CUDA_ARCH_LIST": "8.0;8.6 9.0+PTX"}) == (["80", "86", "90"], ["90"])
    assert targets({"TORCH_CUDA_ARCH_LIST": "7.5,8.9"}) == (["75", "89"], [])  # no +PTX: none, as torch does
    assert targets({"TORCH_CUDA_ARCH_LIST": "9.0a"}) == (["90a"], [])
    assert targets({"SDKD_CUDA_ARCHS": "80;90", "TORCH_CUDA_ARCH_LIST": "7.0"}) == (["80", "90"], ["90"])
    with pytest.raises(ValueError, match="TORCH_CUDA_ARCH_LIST must look like"):
        targets({"TORCH_CUDA_ARCH_LIST": "Ampere"})
    with pytest.raises(ValueError, match="SDKD_CUDA_ARCHS is set but names no architecture"):
        targets({"SDKD_CUDA_ARCHS": ";"})


def test_build_jobs_sdkd_then_max_jobs():
    jobs = SETUP["build_jobs"]
    assert jobs({}) == 0 and jobs({"MAX_JOBS": "3"}) == 3 and jobs({"MAX_JOBS": "3", "SDKD_BUILD_JOBS": "1"}) == 1
    with pytest.raises(ValueError, match="MAX_JOBS must be a whole number"):
        jobs({"MAX_JOBS": "many"})


def test_flags_per_compiler_family():
    flags = SETUP["compiler_flags"]
    assert flags("msvc", "win32") == (["/O2", "/openmp"], [])
    assert flags("msvc", "win32", openmp=False) == (["/O2"], [])
    assert flags("unix", "linux") == (["-O3", "-fopenmp"], ["-fopenmp"])
    compile_args, link_args = flags("unix", "darwin")  # Apple clang: libomp through -Xpreprocessor, or none
    assert "-fopenmp" not in link_args and (compile_args == ["-O3"] or "-Xpreprocessor" in compile_args)
    assert all(not a.startswith("-") for a in flags("msvc", "win32")[0])  # no GCC spelling reaches MSVC


def test_build_without_a_compiler_fails_and_names_the_pure_python_switch(tmp_path):
    env = {**os.environ, "SDKD_NO_CUDA": "1", "SDKD_BUILD_JOBS": "1"}
    for var in ("CC", "CXX", "LDSHARED", "LDCXXSHARED"):
        env[var] = str(tmp_path / "no-such-compiler")
    r = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--build-temp", str(tmp_path / "t")]
        + ["--build-lib", str(tmp_path / "lib")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode != 0
    assert "sdkd: building the extension sdkd._C failed" in r.stderr
    assert "SDKD_NO_EXT=1 pip install ." in r.stderr
    assert not list((tmp_path / "lib").rglob("_C*"))  # nothing half-built was installed
