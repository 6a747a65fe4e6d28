"""Shared parametrisation of a hot op's backends for the parity tests (one case per backend)."""

import pytest
import torch

BACKEND_NAMES = ("reference", "cpu", "triton", "cuda")


def backend_params() -> list:
    """``pytest.param(name, device)`` per backend.

    Triton runs on the GPU where one is present (under the interpreter on CPU otherwise); every case
    on a GPU carries the ``gpu`` marker (so ``pytest -m gpu`` selects it) and is skipped without one.
    """
    gpu = torch.cuda.is_available()
    out = []
    for name in BACKEND_NAMES:
        dev = "cuda" if name == "cuda" or (name == "triton" and gpu) else "cpu"
        marks = []
        if dev == "cuda":
            marks.append(pytest.mark.gpu)
            if not gpu:
                marks.append(pytest.mark.skip(reason="no CUDA GPU"))
        out.append(pytest.param(name, dev, marks=marks, id=name))
    return out
