"""sdkd's CUDA kernels run on the CPU under emulation (tests/cuda_emu/emu.h), against the references.

The kernel sources (``csrc/cuda/*_kernel.cuh``) are compiled with the host C++ compiler, every CUDA thread
becoming a host thread, so their indexing, shared-memory use, block synchronisation, warp shuffles and (spectral
loss) the last-block loss write are checked on machines without a GPU (CI). Float32 and float64 only (the 16-bit
types need CUDA's headers); the GPU parity tests cover the rest on a GPU. Blocks run one after another here, so
this cannot expose races between blocks, and it says nothing about speed.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from sdkd.ops.capped_simplex import (
    _a2d_solve_reference,
    capped_simplex_projection_backward_reference,
    default_a2d_tol,
    projection_forward_reference,
)
from sdkd.ops.spectral_loss import band_energies_reference, spectral_loss_reference

SL = importlib.import_module("sdkd.ops.spectral_loss")
PLAN = importlib.import_module("sdkd.ops.spectral_loss.plan")
NATIVE = importlib.import_module("sdkd.ops.spectral_loss.native")
FFT_PATH = importlib.import_module("sdkd.ops.spectral_loss.fft_path")
EXT = importlib.import_module("sdkd.ops._ext")
ROOT = Path(__file__).resolve().parents[1]
CXX = os.environ.get("CXX", "g++")
TOL = {torch.float64: 1e-12, torch.float32: 2e-5}


def _build(tmp_path_factory, name: str) -> ctypes.CDLL:
    if shutil.which(CXX) is None:
        pytest.skip(f"no C++ compiler ({CXX}) to build the CUDA emulation")
    out = tmp_path_factory.mktemp("cuda_emu") / f"{name}.so"
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
    subprocess.run([*cmd, str(ROOT / f"tests/cuda_emu/{name}.cpp"), "-o", str(out)], check=True)
    return ctypes.CDLL(str(out))


P, I64, INT, F64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_double


@pytest.fixture(scope="module")
def emu_lib(tmp_path_factory):
    lib = _build(tmp_path_factory, "spectral_loss_emu")
    lib.sdkd_emu_spectral_loss.argtypes = [P, P, P, P, P, INT, I64, I64, I64, P, P, P, P, P, I64, I64, INT, INT, P]
    lib.sdkd_emu_spectral_loss_fft.argtypes = [P, P, P, P, P, INT, I64, I64, I64, P, I64, INT, INT, P, INT]
    lib.sdkd_emu_spectral_loss.restype = lib.sdkd_emu_spectral_loss_fft.restype = INT
    return lib


@pytest.fixture(scope="module")
def emu_cs(tmp_path_factory):
    lib = _build(tmp_path_factory, "capped_simplex_emu")
    lib.sdkd_emu_capped_simplex_project.argtypes = [P, P, INT, I64, I64, F64]
    lib.sdkd_emu_capped_simplex_backward.argtypes = [P, P, P, INT, I64, I64, F64]
    lib.sdkd_emu_a2d_solve.argtypes = [P, P, P, INT, I64, I64, F64, I64, F64]
    for fn in (lib.sdkd_emu_capped_simplex_project, lib.sdkd_emu_capped_simplex_backward, lib.sdkd_emu_a2d_solve):
        fn.restype = INT
    return lib


@pytest.fixture(params=["box", "fft", "fft_reload_x"])
def kernel(request, emu_lib):
    """``launch(s, t, cuts, gains, reduction, with_grad=True, with_loss=True) -> (loss, grad, raw energies)`` on
    (N, H, W) ``s`` (minus ``t``) through the emulated box kernel or FFT kernel (power-of-two H, W only; "reload_x":
    its variant for large slices that reads x again instead of keeping it, "mean" only)."""

    def launch(s, t, cuts, gains, reduction, with_grad=True, with_loss=True):
        if request.param == "fft_reload_x" and reduction == "band_mean":
            pytest.skip("the FFT kernel keeps x in shared memory for band_mean")
        N, H, W = s.shape
        plan = PLAN.dft_plan(H, W, cuts)
        grad = torch.empty_like(s) if with_grad else None
        loss = torch.empty((), dtype=s.dtype) if with_loss else None
        # without a loss output the caller zeroes the energies; with one the launch does (NaN shows if it did not)
        e = (
            torch.zeros(plan.nb + 1, dtype=torch.float64)
            if not with_loss
            else torch.full((plan.nb + 1,), torch.nan, dtype=torch.float64)
        )
        ptr = lambda x: None if x is None else x.data_ptr()  # noqa: E731
        head = (ptr(s), ptr(t), ptr(grad), ptr(e), ptr(gains), 0 if s.dtype == torch.float32 else 1, N, H, W)
        tail = (plan.nb, int(reduction == "band_mean"), ptr(loss))
        if request.param == "box":
            tabs = PLAN.dft_tables(plan, torch.device("cpu"), s.dtype)
            rc = emu_lib.sdkd_emu_spectral_loss(*head, *(x.data_ptr() for x in tabs), plan.Kr, plan.Kc, *tail)
        else:
            assert PLAN._is_pow2(H) and PLAN._is_pow2(W)
            keep_x = int(request.param == "fft")
            rc = emu_lib.sdkd_emu_spectral_loss_fft(*head, PLAN.band_map(plan).data_ptr(), plan.Kc, *tail, keep_x)
        assert rc == 0
        return loss, grad, e[: plan.nb]

    launch.name = request.param
    return launch


def _gains(H, W, cuts, numel, reduction):
    weights = tuple(1.0 + 0.5 * b for b in range(len(cuts) + 1))
    return weights, PLAN._gains(weights, PLAN._band_norms(H, W, cuts, numel, reduction), None, 1e-6, "cpu")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("reduction", ["mean", "band_mean"])
@pytest.mark.parametrize("cuts", [(0.0,), (0.02,), (0.25,), (0.45,), (0.1, 0.2, 0.3)])
@pytest.mark.parametrize(
    "shape", [(1, 7, 9), (3, 31, 64), (1, 2, 4), (2, 16, 8), (3, 32, 64)], ids=lambda s: "x".join(map(str, s))
)
def test_emulated_cuda_kernel_matches_reference(kernel, shape, cuts, reduction, dtype):
    """Loss and gradient of both kernels in every mode. FFT kernel, three bands: the gradient part u is packed
    with itself, never with x_low (in one complex FFT x_low's rounding swamped u, ~1/numel smaller, by ~1000
    ulps)."""
    if kernel.name != "box" and not (PLAN._is_pow2(shape[-2]) and PLAN._is_pow2(shape[-1])):
        pytest.skip("the FFT kernel takes power-of-two sizes")
    g = torch.Generator().manual_seed(0)
    s = torch.randn(shape, dtype=dtype, generator=g)
    t = torch.randn(shape, dtype=dtype, generator=g)
    weights, gains = _gains(shape[-2], shape[-1], cuts, s.numel(), reduction)
    loss, grad, _ = kernel(s, t, cuts, gains, reduction)
    s_ref = s.clone().requires_grad_()
    ref = spectral_loss_reference(s_ref, t, cuts, weights, reduction)
    ref.backward()
    tol = TOL[dtype]
    torch.testing.assert_close(loss, ref.detach(), rtol=tol, atol=0)
    scale = s_ref.grad.abs().max().item()
    assert (grad - s_ref.grad).abs().max().item() <= tol * scale


@pytest.mark.parametrize("reduction", ["mean", "band_mean"])
@pytest.mark.parametrize("cuts", [(0.25,), (0.1, 0.2, 0.3)])
def test_emulated_cuda_kernel_energies_only(kernel, cuts, reduction):
    """The adaptive weighting's teacher pass: no ``t``, no gradient, no loss; raw band energies of ``s``."""
    s = torch.randn(3, 16, 32, dtype=torch.float64)
    _, _, e = kernel(s, None, cuts, None, reduction, with_grad=False, with_loss=False)
    norms = torch.tensor(PLAN._band_norms(16, 32, cuts, s.numel(), reduction), dtype=torch.float64)
    want = band_energies_reference(s, cuts, reduction)
    torch.testing.assert_close(torch.where(norms > 0, e / norms.clamp_min(1), 0.0), want, rtol=1e-12, atol=1e-15)


def test_emulated_cuda_kernel_loss_written_once_all_blocks_are_in(kernel):
    """Many blocks: the loss comes from the block that finishes last (block counter after the energies)."""
    s = torch.randn(40, 8, 8, dtype=torch.float64)
    t = torch.randn(40, 8, 8, dtype=torch.float64)
    weights, gains = _gains(8, 8, (0.25,), s.numel(), "mean")
    loss, _, e = kernel(s, t, (0.25,), gains, "mean")
    ref = spectral_loss_reference(s, t, (0.25,), weights)
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=0)
    torch.testing.assert_close(loss, (gains * e).sum(), rtol=1e-14, atol=0)


class _EmulatedExtension:
    """``sdkd._C`` as the cuda backend's Python side sees it, with the CUDA entry points run under the emulation
    (same arguments; the stream is ignored). Shared-memory sizes come from the same C++ formulas via the emulation
    library's header, so the Python routing (FFT kernel / box kernel / cuFFT path) is the one a GPU would take."""

    def __init__(self, lib):
        self.lib = lib

    def spectral_loss_cuda(self, s, t, grad, e, gains, dtype, N, H, W, cc, sc, cr, sr, bidx, Kr, Kc, nb, bm, stream,
                           loss=0):  # fmt: skip
        assert self.lib.sdkd_emu_spectral_loss(s, t, grad, e, gains, dtype, N, H, W, cc, sc, cr, sr, bidx, Kr, Kc, nb,
                                               int(bm), loss) == 0  # fmt: skip

    def spectral_loss_cuda_fft(self, s, t, grad, e, gains, dtype, N, H, W, bmap, Kc, nb, bm, stream, loss=0):
        keep_x = int(bm or self.spectral_loss_cuda_fft_smem(dtype, H, W, Kc, nb, grad != 0, True) <= 232448)
        assert self.lib.sdkd_emu_spectral_loss_fft(s, t, grad, e, gains, dtype, N, H, W, bmap, Kc, nb, int(bm), loss,
                                                   keep_x) == 0  # fmt: skip

    def spectral_loss_cuda_smem(self, dtype, H, W, Kr, Kc, nb):
        return self.lib.sdkd_emu_spectral_loss_smem(dtype, H, W, Kr, Kc, nb)

    def spectral_loss_cuda_fft_smem(self, dtype, H, W, Kc, nb, with_grad, keep_x=True):
        return self.lib.sdkd_emu_spectral_loss_fft_smem(dtype, H, W, Kc, nb, int(with_grad), int(keep_x))


@pytest.fixture
def cuda_path_on_cpu(emu_lib, monkeypatch):
    """The cuda backend's Python path (``spectral_loss_fused(..., "cuda")``) on CPU tensors, its kernels emulated."""
    emu_lib.sdkd_emu_spectral_loss_smem.argtypes = [INT, I64, I64, I64, I64, INT]
    emu_lib.sdkd_emu_spectral_loss_fft_smem.argtypes = [INT, I64, I64, I64, INT, INT, INT]
    emu_lib.sdkd_emu_spectral_loss_smem.restype = emu_lib.sdkd_emu_spectral_loss_fft_smem.restype = I64
    monkeypatch.setattr(EXT, "extension", lambda: _EmulatedExtension(emu_lib))
    monkeypatch.setattr(PLAN, "_cuda_smem_limit", lambda device: 232448)  # an H100 / H200 block
    monkeypatch.setattr(NATIVE, "_raw_stream", lambda device: 0)
    for cached in (PLAN._cuda_fft_fits, PLAN._cuda_box_fits):
        cached.cache_clear()
    yield
    for cached in (PLAN._cuda_fft_fits, PLAN._cuda_box_fits):
        cached.cache_clear()


@pytest.mark.parametrize("route", ["fft_kernel", "box", "cufft"])
@pytest.mark.parametrize("reduction,adaptive", [("mean", False), ("band_mean", False), ("mean", True)])
@pytest.mark.parametrize("cuts", [(0.25,), (0.1, 0.2, 0.3)])
def test_cuda_backend_python_path_under_emulation(cuda_path_on_cpu, monkeypatch, route, cuts, reduction, adaptive):
    """Routing, argument order, the energies buffer (nb + 1 with the counter), the adaptive two-pass call and the
    gradient's shape, end to end through the cuda backend's Python code with emulated kernels."""
    calls = []
    if route != "fft_kernel":
        monkeypatch.setattr(PLAN, "STATIC_ORDER", replace(PLAN.STATIC_ORDER, cuda_fft_kernel=False))
        monkeypatch.setattr(
            PLAN, "STATIC_ORDER", replace(PLAN.STATIC_ORDER, dft_max_fraction=1.0 if route == "box" else 0.0)
        )
    for module, name in ((NATIVE, "_cuda_fft_pass"), (NATIVE, "_kernel_pass"), (FFT_PATH, "_fft_loss_grad")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _r=real, _n=name, **k: calls.append(_n) or _r(*a, **k))
    shape = (2, 3, 16, 32)
    s = torch.randn(shape, dtype=torch.float64)
    t = torch.randn(shape, dtype=torch.float64)
    weights = tuple(1.0 + 0.5 * b for b in range(len(cuts) + 1))
    loss, grad = SL.spectral_loss_fused(s, t, cuts, weights, reduction, adaptive, 1e-6, "cuda")
    want = {"fft_kernel": "_cuda_fft_pass", "box": "_kernel_pass", "cufft": "_fft_loss_grad"}[route]
    assert calls and set(calls) == {want}, calls
    s_ref = s.clone().requires_grad_()
    ref = spectral_loss_reference(s_ref, t, cuts, weights, reduction, adaptive)
    ref.backward()
    assert loss.shape == () and grad.shape == s.shape
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(grad, s_ref.grad, rtol=0, atol=1e-12 * s_ref.grad.abs().max().item())


# ----------------------------------------------------------------------------- capped simplex / A2D
CS_TOL = {torch.float64: 1e-12, torch.float32: 1e-5}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("M", [1, 2, 3, 5, 8, 13, 17, 40])
def test_emulated_cuda_projection_and_backward_match_reference(emu_cs, M, dtype):
    """300 rows (three blocks of 128, the last one partly idle), every register-array size the dispatch picks."""
    g = torch.Generator().manual_seed(M)
    for C in (1.0, 0.6, 0.3):
        if C * M < 1:
            continue
        y = (3 * torch.randn(300, M, generator=g, dtype=torch.float64)).to(dtype)
        x = torch.empty_like(y)
        code = 1 if dtype == torch.float64 else 0
        assert emu_cs.sdkd_emu_capped_simplex_project(y.data_ptr(), x.data_ptr(), code, 300, M, C) == 0
        torch.testing.assert_close(x, projection_forward_reference(y, C), rtol=0, atol=CS_TOL[dtype])
        gr = torch.randn(300, M, generator=g, dtype=torch.float64).to(dtype)
        gy = torch.empty_like(gr)
        assert emu_cs.sdkd_emu_capped_simplex_backward(x.data_ptr(), gr.data_ptr(), gy.data_ptr(), code, 300, M, C) == 0
        want = capped_simplex_projection_backward_reference(x, gr, C)
        torch.testing.assert_close(gy, want, rtol=0, atol=CS_TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_emulated_cuda_projection_feasible_for_any_spread(emu_cs, dtype):
    """Rows spanning many orders of magnitude (issue 17 item 5): sum x = 1 within M ulp, 0 <= x <= C exactly."""
    g = torch.Generator().manual_seed(7)
    top = 30.0 if dtype == torch.float32 else 250.0
    code = 1 if dtype == torch.float64 else 0
    cases = [
        (torch.tensor([[1e8, 1.0, 0.0]], dtype=torch.float64), 0.6),
        (torch.randn(200, 4, generator=g, dtype=torch.float64) * 1e7, 0.6),
        (torch.randn(200, 7, generator=g, dtype=torch.float64) * torch.logspace(-3, top, 7, dtype=torch.float64), 0.6),
        (torch.randn(200, 40, generator=g, dtype=torch.float64) * 1e6, 0.1),
    ]
    for y64, C in cases:
        y = y64.to(dtype)
        x = torch.empty_like(y)
        assert emu_cs.sdkd_emu_capped_simplex_project(y.data_ptr(), x.data_ptr(), code, y.shape[0], y.shape[1], C) == 0
        err = (x.double().sum(-1) - 1).abs().max().item() / torch.finfo(dtype).eps
        assert err <= y.shape[1] + 1, err
        assert (x >= 0).all() and (x <= torch.tensor(C, dtype=dtype)).all()
        torch.testing.assert_close(x, projection_forward_reference(y, C), rtol=0, atol=CS_TOL[dtype])
    y, x = cases[0][0].to(dtype), torch.empty(1, 3, dtype=dtype)
    emu_cs.sdkd_emu_capped_simplex_project(y.data_ptr(), x.data_ptr(), code, 1, 3, 0.6)
    torch.testing.assert_close(x, torch.tensor([[0.6, 0.4, 0.0]], dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("M", [1, 2, 3, 4, 6, 12, 20])
def test_emulated_cuda_a2d_solve_matches_reference(emu_cs, M, dtype):
    """70 Gram matrices (two blocks of 64), every register-array size; weights and KKT residuals."""
    g = torch.Generator().manual_seed(100 + M)
    F = torch.randn(70, M, 3, generator=g, dtype=torch.float64)
    G = (F @ F.transpose(1, 2) + 0.1 * torch.eye(M, dtype=torch.float64)).to(dtype)
    C = max(0.6, 1.0 / M)
    tol = default_a2d_tol(dtype)
    alpha, res = G.new_empty(70, M), G.new_empty(70)
    code = 1 if dtype == torch.float64 else 0
    assert emu_cs.sdkd_emu_a2d_solve(G.data_ptr(), alpha.data_ptr(), res.data_ptr(), code, 70, M, C, 1000, tol) == 0
    a_ref, r_ref = _a2d_solve_reference(G, C, 1000, tol)
    atol = 1e-4 if dtype == torch.float32 else 1e-9
    torch.testing.assert_close(alpha, a_ref, rtol=0, atol=atol)
    assert (res <= tol).all() and (r_ref <= tol).all()
    torch.testing.assert_close(alpha.sum(-1), torch.ones(70, dtype=dtype), rtol=0, atol=10 * atol)
