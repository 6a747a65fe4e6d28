"""The Triton spectral kernel never launches a program that needs more shared memory than the device has.

``sdkd.kernels.spectral_loss.kernel_fits`` compiles the launch once (no launch), compares the compiled
kernel's shared memory with the device limit and caches the answer; the op then takes the FFT path. On
CPU the compile and the device limit are stubbed with the numbers an H200 gave (a 128 x 128 slice with a
0.75 cutoff needs 262144 bytes, the limit is 232448); the real compile runs in the GPU tests.
"""

from __future__ import annotations

import importlib
from dataclasses import replace

import pytest
import torch

pytest.importorskip("triton")
KS = importlib.import_module("sdkd.kernels.spectral_loss")
SL = importlib.import_module("sdkd.ops.spectral_loss")
PLAN = importlib.import_module("sdkd.ops.spectral_loss.plan")

H200_LIMIT = 232448
CUDA0 = torch.device("cuda", 0)  # a device object only: nothing is allocated on it


@pytest.fixture
def fake_gpu(monkeypatch):
    """Compiled-kernel shared memory and device limit stubbed; returns the list of compiles asked for."""
    compiles = []

    def shared(H, W, Kr, Kc, nb, dtype, device):
        compiles.append((H, W, Kr, Kc, nb, dtype))
        return 262144 if Kr * Kc > 4096 else 65536

    monkeypatch.setattr(KS, "_interpret", lambda: False)
    monkeypatch.setattr(KS, "kernel_shared_memory", shared)
    monkeypatch.setattr(KS, "max_shared_memory", lambda device: H200_LIMIT)
    monkeypatch.setattr(KS, "_FITS", {})
    monkeypatch.setattr(
        PLAN, "STATIC_ORDER", replace(PLAN.STATIC_ORDER, dft_max_fraction=1.0)
    )  # the box path for any cutoff (as the GPU tests force it)
    monkeypatch.setattr(
        PLAN, "STATIC_ORDER", replace(PLAN.STATIC_ORDER, gpu_box_max_slice_macs=float("inf"))
    )  # and for any slice size
    return compiles


def test_too_much_shared_memory_means_fft_path_and_is_cached(fake_gpu):
    big = PLAN.dft_plan(128, 128, (0.75,))  # Kr 128 x Kc 65 box
    small = PLAN.dft_plan(128, 128, (0.02,))
    assert not PLAN._kernel_fits("triton", big, torch.float16, CUDA0)
    assert PLAN._kernel_fits("triton", small, torch.float16, CUDA0)
    assert len(fake_gpu) == 2
    for _ in range(3):  # cached per problem and device: no second compile
        assert not PLAN._kernel_fits("triton", big, torch.float16, CUDA0)
    assert len(fake_gpu) == 2
    assert not PLAN._kernel_fits("triton", big, torch.float32, CUDA0)  # another dtype is another kernel
    assert len(fake_gpu) == 3


def test_side_limit_needs_no_compile(fake_gpu):
    assert not KS.kernel_fits(KS.MAX_SIDE + 1, 16, 3, 3, 2, torch.float32, CUDA0)
    assert fake_gpu == []


def test_interpreter_and_cpu_tensors_skip_the_check(monkeypatch):
    monkeypatch.setattr(KS, "kernel_shared_memory", lambda *a: pytest.fail("compiled on CPU"))
    assert KS.kernel_fits(128, 128, 128, 65, 2, torch.float32, torch.device("cpu"))


def test_op_falls_back_to_fft_when_the_kernel_does_not_fit(monkeypatch):
    """The triton backend with the box kernel refused gives the reference's loss and gradient."""
    monkeypatch.setattr(PLAN, "STATIC_ORDER", replace(PLAN.STATIC_ORDER, dft_max_fraction=1.0))
    monkeypatch.setattr(KS, "kernel_fits", lambda *a: False)
    monkeypatch.setattr(KS, "spectral_loss_triton", lambda *a: pytest.fail("box kernel launched"))
    s = torch.randn(2, 12, 10, requires_grad=True)
    t = torch.randn(2, 12, 10)
    loss = SL.spectral_loss(s, t, (0.25,), [1.0, 2.0], backend="triton")
    (g,) = torch.autograd.grad(loss, s)
    s2 = s.detach().requires_grad_()
    ref = SL.spectral_loss_reference(s2, t, (0.25,), (1.0, 2.0))
    (g2,) = torch.autograd.grad(ref, s2)
    torch.testing.assert_close(loss, ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(g, g2, atol=1e-7, rtol=1e-5)


def test_gpu_backends_leave_large_slices_to_cufft():
    """The box kernel's cost per slice (one CUDA block each) decides: 64x64 and 32x64 at cutoff 0.25 stay on the
    box kernel, 128x128 goes to the FFT path (measured crossover, GPU_BOX_MAX_SLICE_MACS)."""
    small, wide, big = PLAN.dft_plan(64, 64, (0.25,)), PLAN.dft_plan(32, 64, (0.25,)), PLAN.dft_plan(128, 128, (0.25,))
    assert PLAN.box_macs(small) == 2 * (2 * 64 * 64 * 17 + 4 * 33 * 17 * 64)
    assert PLAN.box_macs(wide) < PLAN.box_macs(small) <= PLAN.STATIC_ORDER.gpu_box_max_slice_macs < PLAN.box_macs(big)
    for backend in ("cuda", "triton"):  # decided before any device query, so this runs without a GPU
        assert not PLAN._kernel_fits(backend, big, torch.float32, CUDA0)
