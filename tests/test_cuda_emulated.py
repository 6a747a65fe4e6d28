"""The CUDA spectral-loss kernel run on the CPU under emulation (tests/cuda_emu/emu.h), against the reference.

The kernel source (``csrc/cuda/spectral_loss_kernel.cuh``) is compiled with the host C++ compiler, every CUDA
thread becoming a host thread, so its indexing, shared-memory use, block synchronisation, warp shuffles and
the last-block loss write are checked on machines without a GPU (CI). Float32 and float64 only (the 16-bit
types need CUDA's headers); the GPU parity tests in test_spectral_loss_backends.py cover the rest on a GPU.
Blocks run one after another here, so this cannot expose races between blocks.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from sdkd.ops.spectral_loss import band_energies_reference, spectral_loss_reference

SL = importlib.import_module("sdkd.ops.spectral_loss")
ROOT = Path(__file__).resolve().parents[1]
CXX = os.environ.get("CXX", "g++")
TOL = {torch.float64: 1e-12, torch.float32: 2e-5}


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    if shutil.which(CXX) is None:
        pytest.skip(f"no C++ compiler ({CXX}) to build the CUDA emulation")
    out = tmp_path_factory.mktemp("cuda_emu") / "spectral_loss_emu.so"
    cmd = [
        CXX,
        "-std=c++20",
        "-O1",
        "-shared",
        "-fPIC",
        "-pthread",
        f"-I{ROOT / 'csrc'}",
        f"-I{ROOT / 'tests/cuda_emu'}",
    ]
    subprocess.run([*cmd, str(ROOT / "tests/cuda_emu/spectral_loss_emu.cpp"), "-o", str(out)], check=True)
    fn = ctypes.CDLL(str(out)).sdkd_emu_spectral_loss
    P, I64, INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    fn.argtypes = [P, P, P, P, P, INT, I64, I64, I64, P, P, P, P, P, I64, I64, INT, INT, P]
    fn.restype = INT
    return fn


def _launch(emu, s, t, cuts, gains, reduction, with_grad=True, with_loss=True):
    """One emulated launch on (N, H, W) ``s`` (minus ``t``); returns (loss, grad, raw energies)."""
    N, H, W = s.shape
    plan = SL.dft_plan(H, W, cuts)
    cc, sc, cr, sr, bidx = SL.dft_tables(plan, torch.device("cpu"), s.dtype)
    grad = torch.empty_like(s) if with_grad else None
    loss = torch.empty((), dtype=s.dtype) if with_loss else None
    e = torch.full((plan.nb + 1,), float("nan"), dtype=torch.float64)
    if not with_loss:
        e.zero_()  # the caller zeroes the energies when the kernel does not write the loss
    ptr = lambda x: None if x is None else x.data_ptr()  # noqa: E731
    rc = emu(
        ptr(s), ptr(t), ptr(grad), ptr(e), ptr(gains), 0 if s.dtype == torch.float32 else 1, N, H, W,
        ptr(cc), ptr(sc), ptr(cr), ptr(sr), ptr(bidx), plan.Kr, plan.Kc, plan.nb, int(reduction == "band_mean"),
        ptr(loss),
    )  # fmt: skip
    assert rc == 0
    return loss, grad, e[: plan.nb]


def _gains(H, W, cuts, numel, reduction):
    weights = tuple(1.0 + 0.5 * b for b in range(len(cuts) + 1))
    return weights, SL._gains(weights, SL._band_norms(H, W, cuts, numel, reduction), None, 1e-6, "cpu")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("reduction", ["mean", "band_mean"])
@pytest.mark.parametrize("cuts", [(0.0,), (0.02,), (0.25,), (0.75,), (0.1, 0.2, 0.3)])
@pytest.mark.parametrize("shape", [(1, 7, 9), (3, 31, 64), (2, 16, 16)], ids=lambda s: "x".join(map(str, s)))
def test_emulated_cuda_kernel_matches_reference(emu, shape, cuts, reduction, dtype):
    g = torch.Generator().manual_seed(0)
    s = torch.randn(shape, dtype=dtype, generator=g)
    t = torch.randn(shape, dtype=dtype, generator=g)
    weights, gains = _gains(shape[-2], shape[-1], cuts, s.numel(), reduction)
    loss, grad, _ = _launch(emu, s, t, cuts, gains, reduction)
    s_ref = s.clone().requires_grad_()
    ref = spectral_loss_reference(s_ref, t, cuts, weights, reduction)
    ref.backward()
    tol = TOL[dtype]
    torch.testing.assert_close(loss, ref.detach(), rtol=tol, atol=0)
    scale = s_ref.grad.abs().max().item()
    assert (grad - s_ref.grad).abs().max().item() <= tol * scale


@pytest.mark.parametrize("reduction", ["mean", "band_mean"])
@pytest.mark.parametrize("cuts", [(0.25,), (0.1, 0.2, 0.3)])
def test_emulated_cuda_kernel_energies_only(emu, cuts, reduction):
    """The adaptive weighting's teacher pass: no ``t``, no gradient, no loss; raw band energies of ``s``."""
    s = torch.randn(2, 12, 10, dtype=torch.float64)
    _, _, e = _launch(emu, s, None, cuts, None, reduction, with_grad=False, with_loss=False)
    norms = torch.tensor(SL._band_norms(12, 10, cuts, s.numel(), reduction), dtype=torch.float64)
    want = band_energies_reference(s, cuts, reduction)
    torch.testing.assert_close(torch.where(norms > 0, e / norms.clamp_min(1), 0.0), want, rtol=1e-12, atol=1e-15)


def test_emulated_cuda_kernel_loss_written_once_all_blocks_are_in(emu):
    """Many blocks: the loss comes from the block that finishes last (block counter after the energies)."""
    s = torch.randn(40, 8, 8, dtype=torch.float64)
    t = torch.randn(40, 8, 8, dtype=torch.float64)
    weights, gains = _gains(8, 8, (0.25,), s.numel(), "mean")
    loss, _, e = _launch(emu, s, t, (0.25,), gains, "mean")
    ref = spectral_loss_reference(s, t, (0.25,), weights)
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=0)
    torch.testing.assert_close(loss, (gains * e).sum(), rtol=1e-14, atol=0)
