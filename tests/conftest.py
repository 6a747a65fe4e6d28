"""Fixtures for the CPU test suite."""

import random

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    random.seed(42)
    np.random.seed(42)
    torch.manual_seed(42)
    yield


def pytest_configure(config):
    torch.set_num_threads(max(1, torch.get_num_threads()))
