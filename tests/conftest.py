"""Fixtures for the CPU test suite."""

import random
import subprocess
import sys

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    random.seed(42)
    np.random.seed(42)
    torch.manual_seed(42)
    yield


@pytest.fixture(scope="session")
def dead_pid() -> int:
    """The id of a process that has exited (for the stale-temp-file cleanup tests)."""
    out = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    return int(out.stdout)


def pytest_configure(config):
    torch.set_num_threads(max(1, torch.get_num_threads()))
