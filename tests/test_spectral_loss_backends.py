"""Parity of the fused spectral-loss backends (cpu, triton, cuda) with the reference: loss and gradient.

Each backend runs both of its paths: the truncated-DFT box kernel (forced by raising
``DFT_MAX_FRACTION``) and the FFT path taken when the cutoff keeps most bins. Triton runs under the
interpreter on CPU (fp32, small shapes); CUDA tests skip without a GPU.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from dataclasses import replace

import pytest
import torch

from sdkd.ops._dispatch import Backend, BackendUnavailableError, Op
from sdkd.ops._ext import cuda_unavailable_reason, triton_installed, unavailable_reason
from sdkd.ops.spectral_loss import spectral_loss, spectral_loss_op, spectral_loss_reference

SL = importlib.import_module("sdkd.ops.spectral_loss")
PLAN = importlib.import_module("sdkd.ops.spectral_loss.plan")
NATIVE = importlib.import_module("sdkd.ops.spectral_loss.native")
FFT_PATH = importlib.import_module("sdkd.ops.spectral_loss.fft_path")
sys.modules.setdefault("sdkd.ops.spectral_loss", SL)

HAS_CPU = unavailable_reason("spectral_loss_cpu") is None
HAS_CUDA = torch.cuda.is_available() and cuda_unavailable_reason() is None
HAS_TRITON = importlib.util.find_spec("triton") is not None
GPU = torch.cuda.is_available()

# (dtype, rtol) for loss and gradient (gradient error relative to its max magnitude)
TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 2e-2, torch.bfloat16: 5e-2}
CUTOFFS = [(0.0,), (0.02,), (0.25,), (0.45,), (0.1, 0.2, 0.3)]
MODES = [("mean", False), ("band_mean", False), ("mean", True), ("band_mean", True)]


@pytest.fixture(params=["box", "fft", "fft_kernel"])
def path(request, monkeypatch):
    """GPU backends: force the box-DFT kernel (fraction 1) or the torch.fft / cuFFT path, or leave the defaults
    (for cuda at power-of-two sizes: its FFT kernel, CUDA_FFT_KERNEL)."""
    if request.param != "fft_kernel":
        monkeypatch.setattr(PLAN, "STATIC_ORDER", replace(PLAN.STATIC_ORDER, cuda_fft_kernel=False))
    if request.param == "box":
        monkeypatch.setattr(PLAN, "STATIC_ORDER", replace(PLAN.STATIC_ORDER, dft_max_fraction=1.0))
        monkeypatch.setattr(PLAN, "STATIC_ORDER", replace(PLAN.STATIC_ORDER, cpu_box_max_cost=float("inf")))
        monkeypatch.setattr(PLAN, "STATIC_ORDER", replace(PLAN.STATIC_ORDER, gpu_box_max_slice_macs=float("inf")))
    elif request.param == "fft":
        monkeypatch.setattr(PLAN, "STATIC_ORDER", replace(PLAN.STATIC_ORDER, dft_max_fraction=0.0))
    return request.param


@pytest.fixture(params=["box", "torch_fft", "fft_kernel"])
def cpu_path(request, monkeypatch):
    """cpu backend: force its box-DFT kernel or the torch.fft path, or leave its real-FFT kernel (W >= 8)."""
    if request.param != "fft_kernel":
        monkeypatch.setattr(PLAN, "STATIC_ORDER", replace(PLAN.STATIC_ORDER, cpu_fft_kernel=False))
        monkeypatch.setattr(
            PLAN, "STATIC_ORDER", replace(PLAN.STATIC_ORDER, dft_max_fraction=1.0 if request.param == "box" else 0.0)
        )
        monkeypatch.setattr(PLAN, "STATIC_ORDER", replace(PLAN.STATIC_ORDER, cpu_box_max_cost=float("inf")))
    return request.param


def _ulp_floor(dtype: torch.dtype) -> float:
    """Absolute gradient floor: one subnormal spacing (``smallest_normal * eps``) of a 16-bit dtype, 0 otherwise.

    Tiny gradients (~1e-6 at ``(32, 12, 3, 32, 64)``) sit in float16's subnormal range, where the spacing is
    2**-24 ~ 6e-8: a float16 gradient cannot be closer to the fp32 reference than that, whatever the kernel.
    fp32/fp64 get no floor (their relative tolerance stands alone).
    """
    if dtype not in (torch.float16, torch.bfloat16):
        return 0.0
    fi = torch.finfo(dtype)
    return fi.smallest_normal * fi.eps


def _compare(shape, cuts, reduction, adaptive, backend, dtype=torch.float32, device="cpu", transpose=False):
    nb = len(cuts) + 1
    weights = [1.0 + 0.5 * b for b in range(nb)]
    base = torch.randn(shape, dtype=torch.float64, device=device)
    s0 = (base + 0.3 * torch.randn_like(base)).to(dtype)
    t0 = base.to(dtype)
    if transpose:  # non-contiguous inputs
        s0 = s0.transpose(-1, -2).contiguous().transpose(-1, -2)
        t0 = t0.transpose(-1, -2).contiguous().transpose(-1, -2)
        assert not s0.is_contiguous()
    s1, t1 = s0.clone().requires_grad_(), t0.clone().requires_grad_()
    s2 = s0.detach().to(torch.float64 if dtype == torch.float64 else torch.float32).requires_grad_()
    t2 = t0.detach().to(s2.dtype).requires_grad_()
    if transpose:
        s1 = s0.detach().requires_grad_()
        t1 = t0.detach().requires_grad_()
    loss = spectral_loss(s1, t1, cuts, weights, reduction, adaptive, backend=backend)
    ref = spectral_loss_reference(s2, t2, cuts, weights, reduction, adaptive)
    go = torch.rand((), dtype=torch.float64).item() + 0.5  # one random grad_output into both paths
    (loss * go).backward()
    (ref * go).backward()
    tol = TOL[dtype]
    assert loss.dtype == dtype and loss.shape == ()
    torch.testing.assert_close(loss.double(), ref.double(), rtol=tol, atol=tol * abs(ref.item()) + 1e-30)
    for got, want in ((s1.grad, s2.grad), (t1.grad, t2.grad)):
        assert got.shape == want.shape and got.dtype == dtype
        scale = want.abs().max().item()
        err = (got.double() - want.double()).abs().max().item()
        floor = _ulp_floor(dtype)
        assert err <= tol * scale + floor, f"grad error {err:.3e} > {tol:.1e} * {scale:.3e} + {floor:.1e}"
    torch.testing.assert_close(t1.grad, -s1.grad)


def test_ulp_floor_is_the_subnormal_spacing_of_16_bit_dtypes_only():
    assert _ulp_floor(torch.float16) == 2.0**-24
    assert _ulp_floor(torch.bfloat16) == 2.0**-133
    assert _ulp_floor(torch.float32) == 0.0 and _ulp_floor(torch.float64) == 0.0
    # a float16 gradient of ~1e-6 is quantised to that spacing: rounding alone misses fp32 by up to half of it
    g = torch.linspace(1e-6, 2e-6, 1001, dtype=torch.float64)
    rounding = (g.half().double() - g).abs().max().item()
    assert 0.25 * _ulp_floor(torch.float16) < rounding <= 0.5 * _ulp_floor(torch.float16)


# ----------------------------------------------------------------------------- cpu
@pytest.mark.skipif(not HAS_CPU, reason="sdkd._C not built")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(1, 1, 7, 9), (3, 5, 31, 64), (2, 2, 3, 32, 64), (2, 1, 64, 64), (2, 8, 5)])
@pytest.mark.parametrize("cuts", CUTOFFS)
def test_cpu_parity(shape, cuts, dtype, monkeypatch):
    monkeypatch.setattr(
        PLAN, "STATIC_ORDER", replace(PLAN.STATIC_ORDER, cpu_fft_kernel=False)
    )  # the box kernel, also at power-of-two sizes
    monkeypatch.setattr(PLAN, "STATIC_ORDER", replace(PLAN.STATIC_ORDER, dft_max_fraction=1.0))
    monkeypatch.setattr(PLAN, "STATIC_ORDER", replace(PLAN.STATIC_ORDER, cpu_box_max_cost=float("inf")))
    _compare(shape, cuts, "mean", False, "cpu", dtype)


@pytest.mark.skipif(not HAS_CPU, reason="sdkd._C not built")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(1, 1, 1, 8), (2, 3, 8, 8), (2, 2, 3, 32, 64), (1, 2, 16, 128), (3, 128, 8)])
@pytest.mark.parametrize("cuts", CUTOFFS)
def test_cpu_fft_kernel_parity(shape, cuts, dtype, monkeypatch):
    """The real-FFT kernel: one row (H=1), H < 16 (partly filled row groups), W = 8 (one vector), tall/wide."""
    H, W = shape[-2:]
    assert PLAN._cpu_fft_ok(H, W)
    calls = []
    real = NATIVE._cpu_fft_fused
    monkeypatch.setattr(NATIVE, "_cpu_fft_fused", lambda *a, **k: calls.append(1) or real(*a, **k))
    _compare(shape, cuts, "mean", False, "cpu", dtype)
    assert calls  # the kernel ran (not the box kernel or the torch.fft fallback)


@pytest.mark.skipif(not HAS_CPU, reason="sdkd._C not built")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "shape",
    [
        (1, 2, 32, 480),  # the paper's RBC grid: rows 480 = 4*4*2*3*5
        (1, 1, 121, 240),  # a 2.5-degree climate grid: columns 121 = 11*11
        (2, 3, 24),  # H = 3, W = 24 = 8*3 (radix 3 both ways, partly filled row groups)
        (1, 1, 35, 56),  # 35 = 5*7, 56 = 8*7 (radix 7; W % 16 != 0)
        (1, 1, 13, 104),  # 13 and 104 = 8*13 (radix 13)
        (1, 1, 17, 136),  # 17 and 136 = 8*17: both Bluestein
        (1, 1, 9, 8),  # 9 = 3*3, one vector per row
        (1, 2, 37, 49),  # a 5-degree-ish climate grid: 37 Bluestein, 49 = 7*7 and a partial last vector per row
        (2, 1, 5, 9),  # W = 9: one full and one 1-lane vector per row
        (1, 1, 16, 20),  # powers of two down the columns, W % 8 = 4
    ],
)
@pytest.mark.parametrize("cuts", CUTOFFS)
def test_cpu_fft_kernel_mixed_radix_parity(shape, cuts, dtype, monkeypatch):
    """The real-FFT kernel at sizes that are not powers of two: mixed-radix passes (2, 3, 4, 5, 7, 11, 13),
    Bluestein's algorithm for larger prime factors, and rows whose width is not a multiple of the 8-lane vector,
    forward and backward against the reference."""
    H, W = shape[-2:]
    assert PLAN._cpu_fft_ok(H, W)
    calls = []
    real = NATIVE._cpu_fft_fused
    monkeypatch.setattr(NATIVE, "_cpu_fft_fused", lambda *a, **k: calls.append(1) or real(*a, **k))
    _compare(shape, cuts, "mean", False, "cpu", dtype)
    assert calls


@pytest.mark.skipif(not HAS_CPU, reason="sdkd._C not built")
@pytest.mark.parametrize("reduction,adaptive", MODES)
@pytest.mark.parametrize("shape", [(1, 2, 24, 40), (1, 1, 17, 136), (1, 2, 12, 30)])
def test_cpu_fft_kernel_mixed_radix_modes(shape, reduction, adaptive):
    """Every reduction and weighting through the mixed-radix and Bluestein transforms (W = 40: W % 16 != 0;
    W = 30: a partial last vector per row, band_mean's Nyquist column in it)."""
    _compare(shape, (0.1, 0.3), reduction, adaptive, "cpu", torch.float64)


@pytest.mark.skipif(not HAS_CPU, reason="sdkd._C not built")
@pytest.mark.parametrize("reduction,adaptive", MODES)
@pytest.mark.parametrize("shape", [(2, 2, 32, 64), (1, 3, 64, 64)])
@pytest.mark.parametrize("cuts", [(0.25,), (0.1, 0.2515), (0.1, 0.2, 0.3)])
def test_cpu_fft_kernel_modes(shape, cuts, reduction, adaptive):
    """Every mode through the real-FFT kernel at sizes where its column block holding kx = W/4 has low-band bins in
    a few rows only and takes the direct DFT instead of the column FFTs (0.25: ky = 0; 0.2515 at 64 x 64: ky = 0
    and +-1); more than two bands take the second (gain-weighted) inverse."""
    _compare(shape, cuts, reduction, adaptive, "cpu", torch.float64)


@pytest.mark.skipif(not HAS_CPU, reason="sdkd._C not built")
@pytest.mark.parametrize("reduction,adaptive", MODES)
@pytest.mark.parametrize("shape", [(1, 1, 7, 9), (2, 3, 16, 10), (2, 3, 16, 8)])
@pytest.mark.parametrize("cuts", CUTOFFS)
def test_cpu_modes(shape, cuts, reduction, adaptive, cpu_path):
    _compare(shape, cuts, reduction, adaptive, "cpu", torch.float64)


@pytest.mark.skipif(not HAS_CPU, reason="sdkd._C not built")
@pytest.mark.parametrize("shape", [(2, 3, 12, 20), (2, 3, 16, 32)])
def test_cpu_non_contiguous(shape, cpu_path):
    _compare(shape, (0.1, 0.3), "band_mean", True, "cpu", torch.float32, transpose=True)


@pytest.mark.skipif(not HAS_CPU, reason="sdkd._C not built")
@pytest.mark.parametrize("cuts", [(0.25,), (0.5,)])
def test_cpu_large_batch_default_path(cuts):
    _compare((16, 10, 64, 64), cuts, "mean", False, "cpu", torch.float32)


@pytest.mark.skipif(not HAS_CPU, reason="sdkd._C not built")
def test_cpu_high_band_is_residual_energy():
    """Smooth residual (low/high energy ratio ~1e6): the high band keeps fp32 relative accuracy,
    which total - low could not (REFERENCES.md 8.6)."""
    H = W = 64
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    smooth = torch.cos(2 * torch.pi * (2 * xx + yy) / W).double()
    noise = 1e-3 * torch.randn(4, H, W, dtype=torch.float64)
    s = (smooth + noise).float()
    t = torch.zeros_like(s)
    high = spectral_loss(s, t, 0.25, weights=[0.0, 1.0], backend="cpu")
    want = spectral_loss_reference(s.double(), t.double(), (0.25,), (0.0, 1.0))
    assert abs(high.item() - want.item()) / want.item() < 1e-4


# ----------------------------------------------------------------------------- triton (interpreter on CPU)
@pytest.mark.skipif(not HAS_TRITON, reason="triton not installed")
@pytest.mark.parametrize("shape", [(1, 1, 7, 9), (1, 2, 31, 64), (1, 1, 3, 32, 64), (2, 16, 16)])
@pytest.mark.parametrize("cuts", CUTOFFS)
def test_triton_parity(shape, cuts, monkeypatch):
    monkeypatch.setattr(PLAN, "STATIC_ORDER", replace(PLAN.STATIC_ORDER, dft_max_fraction=1.0))
    device = "cuda" if GPU else "cpu"
    _compare(shape, cuts, "mean", False, "triton", torch.float32, device)


@pytest.mark.skipif(not HAS_TRITON, reason="triton not installed")
@pytest.mark.parametrize("reduction,adaptive", MODES)
@pytest.mark.parametrize("cuts", [(0.25,), (0.1, 0.2, 0.3)])
def test_triton_modes(cuts, reduction, adaptive, monkeypatch):
    monkeypatch.setattr(PLAN, "STATIC_ORDER", replace(PLAN.STATIC_ORDER, dft_max_fraction=1.0))
    device = "cuda" if GPU else "cpu"
    _compare((2, 12, 10), cuts, reduction, adaptive, "triton", torch.float32, device)
    _compare((1, 1, 7, 9), cuts, reduction, adaptive, "triton", torch.float32, device, transpose=True)


@pytest.mark.skipif(not HAS_TRITON, reason="triton not installed")
def test_triton_fft_path():
    device = "cuda" if GPU else "cpu"
    _compare((2, 3, 16, 16), (0.4,), "band_mean", True, "triton", torch.float32, device)


# ----------------------------------------------------------------------------- cuda (GPU only)
@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU and sdkd._C built with CUDA")
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "shape", [(1, 1, 7, 9), (3, 5, 31, 64), (16, 10, 64, 64), (32, 12, 3, 32, 64), (2, 2, 128, 128)]
)
@pytest.mark.parametrize("cuts", CUTOFFS)
def test_gpu_parity(shape, cuts, dtype, backend, path):
    if backend == "triton" and dtype == torch.float64:
        pytest.skip("triton backend takes fp32/fp16/bf16")
    if backend == "triton" and path == "fft_kernel":
        pytest.skip("the FFT kernel is the cuda backend's (triton: the box and fft cases cover it)")
    _compare(shape, cuts, "mean", False, backend, dtype, "cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU and sdkd._C built with CUDA")
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("reduction,adaptive", MODES)
@pytest.mark.parametrize("cuts", CUTOFFS)
def test_gpu_modes(cuts, reduction, adaptive, backend, path):
    if backend == "triton" and path == "fft_kernel":
        pytest.skip("the FFT kernel is the cuda backend's (triton: the box and fft cases cover it)")
    _compare((4, 3, 31, 64), cuts, reduction, adaptive, backend, torch.float32, "cuda", transpose=True)


_KERNEL_PASS, _CUDA_FFT_PASS = NATIVE._kernel_pass, NATIVE._cuda_fft_pass


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU and sdkd._C built with CUDA")
@pytest.mark.parametrize("kernel", ["box", "fft_kernel"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_kernel_loss_over_many_blocks_and_repeated_calls(dtype, kernel, monkeypatch):
    """The cuda kernels' last block writes the loss (a counter after the energy atomics): thousands of blocks,
    several calls in a row (the counter restarts each call), against the reference."""
    calls = []
    if kernel == "box":
        monkeypatch.setattr(PLAN, "STATIC_ORDER", replace(PLAN.STATIC_ORDER, cuda_fft_kernel=False))
        monkeypatch.setattr(PLAN, "STATIC_ORDER", replace(PLAN.STATIC_ORDER, dft_max_fraction=1.0))
        monkeypatch.setattr(PLAN, "STATIC_ORDER", replace(PLAN.STATIC_ORDER, gpu_box_max_slice_macs=float("inf")))
        monkeypatch.setattr(
            NATIVE, "_kernel_pass", lambda *a, **k: calls.append(k.get("loss")) or _KERNEL_PASS(*a, **k)
        )
    else:
        monkeypatch.setattr(
            SL, "_cuda_fft_pass", lambda *a, **k: calls.append(k.get("loss")) or _CUDA_FFT_PASS(*a, **k)
        )
    g = torch.Generator(device="cuda").manual_seed(1)
    s = torch.randn(6000, 8, 16, device="cuda", generator=g).to(dtype)
    t = torch.randn(6000, 8, 16, device="cuda", generator=g).to(dtype)
    ref = spectral_loss_reference(s.float(), t.float(), (0.1, 0.3), (1.0, 2.0, 0.5))
    for _ in range(3):
        got = spectral_loss(s, t, (0.1, 0.3), (1.0, 2.0, 0.5), backend="cuda")
        assert got.dtype == dtype
        torch.testing.assert_close(got.float(), ref, rtol=TOL[dtype], atol=0)
    assert len(calls) == 3 and all(x is not None for x in calls), "the kernel should have written the loss"


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU and sdkd._C built with CUDA")
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_gpu_fused_loss_replays_in_a_cuda_graph(backend):
    """No host sync and no host-side state per call: the fused forward (loss and gradient) captures into a CUDA
    graph (as torch.compile's ``reduce-overhead`` mode does) and replays on new inputs."""
    s = torch.randn(8, 4, 32, 64, device="cuda")
    t = torch.randn_like(s)

    def run():
        return SL.spectral_loss_fused(s, t, (0.25,), (1.0, 1.0), "mean", False, 1e-6, backend)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            run()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        loss, grad = run()
    for _ in range(2):
        s.copy_(torch.randn_like(s))
        graph.replay()
        s2 = s.detach().clone().requires_grad_()
        ref = spectral_loss_reference(s2, t)
        ref.backward()
        torch.cuda.synchronize()
        torch.testing.assert_close(loss, ref, rtol=2e-5, atol=0)
        torch.testing.assert_close(grad, s2.grad, rtol=2e-5, atol=2e-5 * s2.grad.abs().max().item())


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA or torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_gpu_inputs_off_the_current_device(backend):
    """Tensors on cuda:1 while cuda:0 is current: the kernels run on the tensors' device."""
    s = torch.randn(4, 3, 32, 64, device="cuda:1")
    t = torch.randn_like(s)
    with torch.cuda.device(0):
        got = spectral_loss(s, t, 0.25, backend=backend)
    torch.testing.assert_close(got.cpu(), spectral_loss_reference(s.cpu(), t.cpu()), rtol=2e-5, atol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU and sdkd._C built with CUDA")
def test_gpu_matches_cupy_fft():
    cupy = pytest.importorskip("cupy")
    x = torch.randn(6, 32, 64, device="cuda", dtype=torch.float64)
    X = torch.as_tensor(cupy.fft.rfft2(cupy.asarray(x), norm="ortho"), device="cuda")
    idx = SL.band_index(32, 64, (0.25,), device="cuda")
    w = SL.hermitian_weights(64, device="cuda", dtype=torch.float64)
    p = (X.abs() ** 2 * w).sum(0)
    want = torch.zeros(2, dtype=torch.float64, device="cuda").index_add(0, idx.flatten(), p.flatten()) / x.numel()
    got = spectral_loss(x, torch.zeros_like(x), 0.25, weights=[1.0, 0.0], backend="cuda")
    torch.testing.assert_close(got, want[0], rtol=1e-10, atol=0)


# ----------------------------------------------------------------------------- dispatch
def test_auto_on_cpu_picks_the_cpu_backend_at_every_size(monkeypatch):
    pow2, odd = torch.randn(2, 8, 16), torch.randn(2, 7, 9)
    pick = lambda x, **kw: spectral_loss_op.select("auto", s=x, t=x, cutoffs=(0.25,), **kw).name  # noqa: E731
    if not HAS_CPU:
        assert pick(pow2) == pick(odd) == "reference"
        return
    assert pick(pow2, requested="auto") == "cpu"  # real-FFT kernel: ~5x the reference (bench)
    assert pick(odd, requested="auto") == "cpu"  # mixed-radix real-FFT kernel (W >= 8)
    assert pick(odd.double(), requested="auto") == "cpu"
    assert pick(odd.half(), requested="auto") == "reference"  # float32 / float64 only
    calls = []
    monkeypatch.setattr(FFT_PATH, "_fft_loss_grad", lambda *a: calls.append(a) or _FFT_LOSS_GRAD(*a))
    monkeypatch.setattr(
        PLAN, "STATIC_ORDER", replace(PLAN.STATIC_ORDER, cpu_fft_kernel=False)
    )  # without the real-FFT kernel:
    big = torch.randn(2, 3, 63, 65)  # box cost 25 > CPU_BOX_MAX_COST: the torch.fft path
    loss = spectral_loss(big, torch.zeros_like(big), 0.25)
    assert len(calls) == 1
    torch.testing.assert_close(loss, big.square().mean(), rtol=1e-5, atol=0)


_FFT_LOSS_GRAD = FFT_PATH._fft_loss_grad


def test_env_override(monkeypatch):
    s = torch.randn(2, 8, 8)
    monkeypatch.setenv("SDKD_BACKEND", "reference")
    assert spectral_loss_op.select("auto", s=s, t=s, cutoffs=(0.25,)).name == "reference"


def test_dispatch_remembers_picks_per_input_kind_but_never_a_refusal():

    probes = []

    def probe(name, ok):
        return lambda s=None, **_: probes.append(name) or ([] if ok(s) else [f"{name} refuses {s.dtype}"])

    op = Op(
        "toy",
        [
            Backend("fast", lambda: "fast", probe("fast", lambda s: s.dtype == torch.float32)),
            Backend("reference", lambda: "ref", probe("reference", lambda s: s.dtype != torch.int8)),
        ],
        auto_key=lambda s=None, **_: (s.device, s.dtype),
    )
    f32, f64, i8 = torch.zeros(2), torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.int8)
    assert op.select("auto", s=f32).name == "fast" and probes == ["fast"]
    assert op.select("auto", s=torch.ones(5)).name == "fast" and probes == ["fast"]  # same kind: no probe
    assert op.select("auto", s=f64).name == "reference" and probes == ["fast", "fast", "reference"]
    assert op.select("reference", s=f32).name == "reference" and probes[-1] == "reference"  # its own key
    n = len(probes)
    assert op.select("reference", s=torch.ones(3)).name == "reference" and len(probes) == n
    for _ in range(2):  # a refusal is probed (and its reasons listed) every time
        with pytest.raises(BackendUnavailableError, match="(?s)fast refuses torch.int8.*reference refuses"):
            op.select("auto", s=i8)
        with pytest.raises(BackendUnavailableError, match="fast refuses torch.float64"):
            op.select("fast", s=f64)
    assert len(probes) == n + 6
    op.clear_picks()
    assert op.select("auto", s=f32).name == "fast" and len(probes) == n + 7


def test_spectral_loss_picks_follow_the_environment(monkeypatch):
    s = torch.randn(2, 8, 8)
    first = spectral_loss_op.select("auto", s=s, t=s, cutoffs=(0.25,)).name
    monkeypatch.setenv("SDKD_BACKEND", "reference")
    assert spectral_loss_op.select("auto", s=s, t=s, cutoffs=(0.25,)).name == "reference"
    monkeypatch.delenv("SDKD_BACKEND")
    assert spectral_loss_op.select("auto", s=s, t=s, cutoffs=(0.25,)).name == first
    if triton_installed():  # CPU tensors go to Triton's interpreter only when asked, whatever auto remembered
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        assert spectral_loss_op.select("triton", s=s, t=s, cutoffs=(0.25,), requested="triton").name == "triton"
        monkeypatch.delenv("TRITON_INTERPRET")
        with pytest.raises(BackendUnavailableError, match="CPU tensors only under TRITON_INTERPRET=1"):
            spectral_loss_op.select("triton", s=s, t=s, cutoffs=(0.25,), requested="triton")


def test_env_naming_no_backend_warns_once_and_means_auto(monkeypatch):
    s = torch.randn(2, 8, 8)
    want = spectral_loss_op.select("auto", s=s, t=s, cutoffs=(0.25,)).name
    monkeypatch.setenv("SDKD_BACKEND", "cdua")
    with pytest.warns(UserWarning, match="SDKD_BACKEND='cdua' names no backend of any op"):
        assert spectral_loss_op.select("auto", s=s, t=s, cutoffs=(0.25,)).name == want
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert spectral_loss_op.select("auto", s=s, t=s, cutoffs=(0.25,)).name == want  # once per value


def test_explicit_backend_that_cannot_run_lists_reasons():
    s = torch.randn(2, 8, 8)
    with pytest.raises(BackendUnavailableError, match="cuda"):
        spectral_loss(s, s.clone(), backend="cuda") if not HAS_CUDA else spectral_loss(s, s, backend="cuda")
    if HAS_CPU:
        with pytest.raises(BackendUnavailableError, match="float16"):
            spectral_loss(s.half(), s.half(), backend="cpu")


@pytest.mark.skipif(not HAS_TRITON or GPU, reason="interpreter-only rule")
def test_triton_on_cpu_only_when_requested():
    s = torch.randn(2, 8, 8)
    reasons = spectral_loss_op.get("triton").not_supported_reasons(s=s, t=s, cutoffs=(0.25,), requested="auto")
    assert reasons and "interpreter" in reasons[0]


@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_bad_input_errors_are_shared(backend):
    if backend == "cpu" and not HAS_CPU:
        pytest.skip("sdkd._C not built")
    s = torch.randn(2, 8, 8)
    with pytest.raises(ValueError, match="shape"):
        spectral_loss(s, torch.randn(2, 8, 9), backend=backend)
    with pytest.raises(ValueError, match="increasing"):
        spectral_loss(s, s.clone(), cutoffs=(0.3, 0.2), backend=backend)
    with pytest.raises(ValueError, match=">= 0"):
        spectral_loss(s, s.clone(), cutoffs=(-0.1,), backend=backend)
    with pytest.raises(ValueError, match="weights"):
        spectral_loss(s, s.clone(), cutoffs=(0.1, 0.2), weights=[1.0, 2.0], backend=backend)
    with pytest.raises(TypeError, match="dtype"):
        spectral_loss(s, s.double(), backend=backend)
    bad = s.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="student"):
        spectral_loss(bad, s, backend=backend)
    with pytest.raises(ValueError, match="teacher"):
        spectral_loss(s, bad, backend=backend)


# ----------------------------------------------------------------------------- custom op
@pytest.mark.skipif(not HAS_CPU, reason="sdkd._C not built")
def test_custom_op_opcheck_and_fake():
    s = torch.randn(2, 3, 12, 10, requires_grad=True)
    t = torch.randn(2, 3, 12, 10)
    torch.library.opcheck(
        torch.ops.sdkd.spectral_loss_fwd.default,
        (s, t, [0.25], [1.0, 2.0], "mean", False, 1e-6, "cpu"),
        test_utils=("test_schema", "test_faketensor", "test_autograd_registration"),
    )


def _compiled_matches_eager(f, s, t):
    """torch.compile(f, fullgraph=True) gives eager's loss and gradient; returns the compiled function."""
    torch._dynamo.reset()
    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    out = compiled(s, t)
    (g,) = torch.autograd.grad(out, s)
    s2 = s.detach().requires_grad_()
    want = f(s2, t)
    (g2,) = torch.autograd.grad(want, s2)
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(g, g2)
    return compiled


@pytest.mark.skipif(not HAS_CPU, reason="sdkd._C not built")
def test_torch_compile_no_graph_break():
    def f(s, t):
        return spectral_loss(s, t, (0.1, 0.3), weights=[1.0, 2.0, 0.5], backend="cpu", check=False) * 2.0

    _compiled_matches_eager(f, torch.randn(2, 3, 16, 12, requires_grad=True), torch.randn(2, 3, 16, 12))


def test_torch_compile_full_graph_with_default_arguments():
    """auto dispatch (its probes taken as constants) and the finiteness check (an async assert) trace too."""
    from sdkd.losses import SpectralKD

    s = torch.randn(2, 3, 16, 12, requires_grad=True)
    t = torch.randn(2, 3, 16, 12)
    for f in (lambda a, b: spectral_loss(a, b, 0.25), SpectralKD(alpha=2.0)):
        compiled = _compiled_matches_eager(f, s, t)
        bad = t.clone()
        bad[0, 0, 0, 0] = float("nan")
        with pytest.raises(RuntimeError, match="the loss is not finite"):
            compiled(s, bad)


@pytest.mark.skipif(not HAS_CPU, reason="sdkd._C not built")
def test_backward_scales_saved_gradient():
    s = torch.randn(3, 16, 16, requires_grad=True)
    t = torch.randn(3, 16, 16)
    loss = spectral_loss(s, t, backend="cpu")
    (g1,) = torch.autograd.grad(loss, s, retain_graph=True)
    (g3,) = torch.autograd.grad(loss * 3.0, s)
    torch.testing.assert_close(g3, 3.0 * g1)
    torch.testing.assert_close(g1, 2 * (s - t).detach() / s.numel())  # all-ones weights: mse gradient


@pytest.mark.skipif(not HAS_CPU, reason="sdkd._C not built")
def test_gradient_is_handed_to_autograd_and_recomputed_on_a_second_backward():
    """The eager path gives its forward-computed gradient to AccumulateGrad (no copy); backward through the same
    graph again (retain_graph=True) recomputes it, with the same values."""
    s = torch.randn(2, 3, 16, 32, requires_grad=True)
    t = torch.randn(2, 3, 16, 32, requires_grad=True)
    loss = spectral_loss(s, t, (0.1, 0.3), weights=(3.0, 2.0, 1.0), backend="cpu")
    loss.backward(retain_graph=True)
    g_s, g_t = s.grad.clone(), t.grad.clone()
    (2.0 * loss).backward()  # accumulates 2x more
    torch.testing.assert_close(s.grad, 3.0 * g_s)
    torch.testing.assert_close(t.grad, 3.0 * g_t)
    ref = spectral_loss_reference(s, t, (0.1, 0.3), (3.0, 2.0, 1.0))
    (want,) = torch.autograd.grad(ref, s)
    torch.testing.assert_close(g_s, want, rtol=1e-5, atol=1e-9)
