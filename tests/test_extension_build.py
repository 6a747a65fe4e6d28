"""The compiled extension ``sdkd._C``: built, with its CUDA part whenever nvcc exists (so a CUDA
compile error fails CI), and a CUDA call on a machine without a usable GPU raises a clear error."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from sdkd.ops import _ext
from sdkd.ops._dispatch import BackendUnavailableError
from sdkd.ops.spectral_loss import spectral_loss

NO_EXT = os.environ.get("SDKD_NO_EXT") == "1"
NVCC = shutil.which("nvcc") is not None or bool(os.environ.get("CUDA_HOME"))
WANT_CUDA = NVCC and os.environ.get("SDKD_NO_CUDA") != "1" and not NO_EXT
GPU_USABLE = _ext.cuda_unavailable_reason() is None


@pytest.mark.skipif(NO_EXT, reason="SDKD_NO_EXT=1")
def test_extension_is_built():
    assert _ext.unavailable_reason() is None, _ext.import_error()
    C = _ext.extension()
    assert C.openmp_threads() >= 1
    assert hasattr(C, "spectral_loss_cpu")


@pytest.mark.skipif(not WANT_CUDA, reason="no nvcc at build time (or SDKD_NO_CUDA=1)")
def test_cuda_part_compiled_when_nvcc_present():
    C = _ext.extension()
    assert C is not None and C.has_cuda(), "nvcc is on this machine but sdkd._C was built without CUDA"
    assert hasattr(C, "spectral_loss_cuda")
    count, code, name = C.cuda_status()
    assert isinstance(name, str) and (code != 0 or count > 0)


@pytest.mark.skipif(not WANT_CUDA or GPU_USABLE, reason="needs a CUDA build on a machine without a usable GPU")
def test_cuda_without_gpu_raises_clear_error():
    why = _ext.cuda_unavailable_reason()
    assert why.startswith("sdkd._C was built with CUDA but no usable GPU: cuda")
    count, code, name = _ext.cuda_status()
    assert str(code) in why and name in why
    with pytest.raises(RuntimeError, match="no usable GPU"):
        _ext.require_cuda()
    # a raw launch returns the CUDA error, which the binding turns into an exception (no crash)
    C = _ext.extension()
    with pytest.raises(RuntimeError, match=r"spectral_loss_cuda failed: cuda\w+ \(\d+\)"):
        C.spectral_loss_cuda(0, 0, 0, 0, 0, 0, 1, 8, 8, 0, 0, 0, 0, 0, 1, 1, 2, False, 0)
    with pytest.raises(RuntimeError, match=r"spectral_loss_cuda failed: cuda\w+ \(\d+\)"):  # with a loss output
        C.spectral_loss_cuda(0, 0, 0, 0, 1, 0, 1, 8, 8, 0, 0, 0, 0, 0, 1, 1, 2, False, 0, 1)
    # and the dispatcher names the reason
    s = torch.randn(2, 8, 8)
    with pytest.raises(BackendUnavailableError, match="no usable GPU"):
        spectral_loss(s, s.clone(), backend="cuda")


def test_bad_sizes_rejected_before_any_launch():
    C = _ext.extension()
    if C is None:
        pytest.skip("sdkd._C not built")
    with pytest.raises(ValueError, match="bad sizes"):
        C.spectral_loss_cpu(1, 0, 0, 1, 0, 0, 0, 8, 8, 1, 1, 1, 1, 1, 1, 1, 2, False)
    with pytest.raises(ValueError, match="null pointer"):
        C.spectral_loss_cpu(0, 0, 0, 1, 0, 0, 1, 8, 8, 1, 1, 1, 1, 1, 1, 1, 2, False)
    # the real-FFT entry: (s, t, grad, energies, gains, dtype, N, H, W, bmap, Kc, nb, band_mean, loss)
    with pytest.raises(ValueError, match="bad sizes"):
        C.spectral_loss_cpu_fft(
            1, 0, 0, 1, 0, 0, 1, 8, 6, 1, 3, 2, False
        )  # W < 8 (any H is taken since the mixed-radix kernel)
    with pytest.raises(ValueError, match="null pointer"):
        C.spectral_loss_cpu_fft(1, 0, 0, 0, 0, 0, 1, 8, 8, 1, 3, 2, False)  # neither energies nor loss
    with pytest.raises(ValueError, match="null pointer"):
        C.spectral_loss_cpu_fft(1, 0, 0, 0, 0, 0, 1, 8, 8, 1, 3, 2, False, 1)  # a loss needs the gains
    if hasattr(C, "spectral_loss_cuda"):  # checked before any CUDA call, GPU or not
        with pytest.raises(ValueError, match="bad sizes"):
            C.spectral_loss_cuda(1, 0, 0, 1, 0, 0, 1, 8, 8, 1, 1, 1, 1, 1, 1, 1, 9, False, 0)
        with pytest.raises(ValueError, match="needs the gains"):
            C.spectral_loss_cuda(1, 0, 0, 1, 0, 0, 1, 8, 8, 1, 1, 1, 1, 1, 1, 1, 2, False, 0, 1)


def test_summary_reports_state():
    info = _ext.summary()
    assert info["built"] == (_ext.extension() is not None)
    if info["built"]:
        assert info["cuda_usable"] == GPU_USABLE
