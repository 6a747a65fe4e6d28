"""Shared parametrisation of a hot op's backends for the parity tests (one case per backend)."""

import pytest
import torch

BACKEND_NAMES = ("reference", "cpu", "triton", "cuda")


def backend_params() -> list:
    """``pytest.param(name, device)`` per backend; CUDA cases are skipped without a GPU."""
    out = []
    for name in BACKEND_NAMES:
        dev = "cuda" if name == "cuda" else "cpu"
        marks = [] if (dev == "cpu" or torch.cuda.is_available()) else [pytest.mark.skip(reason="no CUDA GPU")]
        out.append(pytest.param(name, dev, marks=marks, id=name))
    return out
