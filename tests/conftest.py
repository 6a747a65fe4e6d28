"""Fixtures for the CPU test suite."""

import os
import random
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    random.seed(42)
    np.random.seed(42)
    torch.manual_seed(42)
    yield


@pytest.fixture(autouse=True)
def _restore_deterministic_mode():
    """A training run switches ``torch.use_deterministic_algorithms`` on for its process (``train.deterministic``);
    each test starts from the mode the session had, so no test depends on which ran before it (measured ``auto``
    times nothing in deterministic mode)."""
    mode, warn_only = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    yield
    torch.use_deterministic_algorithms(mode, warn_only=warn_only)


@pytest.fixture(scope="session")
def dead_pid() -> int:
    """The id of a process that has exited (for the stale-temp-file cleanup tests)."""
    out = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    return int(out.stdout)


def pytest_configure(config):
    torch.set_num_threads(max(1, torch.get_num_threads()))
    # Measured `auto` times candidates on a call's first use: the suite runs the static order (fast, and the same
    # on every run) except in the tests of tuning itself, which switch it on; no test reads or writes the user's
    # picks file (subprocesses inherit both variables).
    os.environ["SDKD_AUTOTUNE"] = "0"
    config._sdkd_cache_dir = tempfile.mkdtemp(prefix="sdkd-test-cache-")
    os.environ["SDKD_CACHE_DIR"] = config._sdkd_cache_dir


def pytest_unconfigure(config):
    cache_dir = getattr(config, "_sdkd_cache_dir", None)
    if cache_dir:
        shutil.rmtree(cache_dir, ignore_errors=True)
