"""Fused attention + residual + LayerNorm (``sdkd.ops.attention``, Triton) vs SDPA + separate residual and
LayerNorm, forward and forward+backward. GPU only (the Triton interpreter is no fast path): skipped on CPU.

Grid: N in {64, 256, 1024, 4096} tokens, head dim d in {32, 64, 128} at d_model = 256 (ST-AlterNet's hid_T:
8, 4, 2 heads), bf16, batch 16 for N <= 1024 (NSE 16 x 256 tokens, WeatherBench 16 x 128) and 4 at N = 4096.
Baselines are the reference op (qkv linear, SDPA, W_o linear, residual adds, ``F.layer_norm``) with SDPA left
to choose (``sdpa-auto``) and pinned to each backend that runs (``torch.nn.attention.sdpa_kernel``:
flash, efficient, cudnn, math), recorded by name. Each round times 10 calls (3 at N = 4096) between CUDA syncs.
``extra_info``: per-call milliseconds and attention TFLOP/s (4 B H N^2 d forward, x 3.5 forward+backward).
Targets (issue 8): >= 1.3x over ``sdpa-auto`` at N <= 1024, >= 0.8x of ``sdpa-flash`` at N = 4096; a
module fixture prints every case's speedups at the end (-s).

    pytest bench/bench_attention.py --benchmark-only [--benchmark-json=out.json]
"""

from __future__ import annotations

import contextlib
import os

import pytest
import torch

from sdkd.ops.attention import attention, attention_op

CUDA = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"
pytestmark = pytest.mark.skipif(not CUDA, reason="attention benchmarks need a CUDA GPU")

D_MODEL = 256
SEQ = [64, 256, 1024, 4096]
HEAD_DIMS = [32, 64, 128]
DTYPE = torch.bfloat16
ROUNDS = int(os.environ.get("SDKD_BENCH_ROUNDS", "10"))
IMPLS = ["fused", "sdpa-auto", "sdpa-flash", "sdpa-efficient", "sdpa-cudnn", "sdpa-math"]
_MEDIANS: dict[tuple, float] = {}


def _sdpa_context(impl: str):
    if impl in ("fused", "sdpa-auto"):
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    name = {
        "sdpa-flash": "FLASH_ATTENTION",
        "sdpa-efficient": "EFFICIENT_ATTENTION",
        "sdpa-cudnn": "CUDNN_ATTENTION",
        "sdpa-math": "MATH",
    }[impl]
    if not hasattr(SDPBackend, name):
        pytest.skip(f"{impl}: SDPBackend.{name} not in this torch")
    return sdpa_kernel(getattr(SDPBackend, name))


def _inputs(B: int, N: int, requires_grad: bool):
    g = torch.Generator(device="cuda").manual_seed(0)
    D = D_MODEL

    def r(*shape, scale=1.0, shift=0.0):
        x = torch.randn(*shape, device="cuda", generator=g) * scale + shift
        return x.to(DTYPE).requires_grad_(requires_grad)

    return [
        r(B, N, D),
        r(B, N, D),
        r(3 * D, D, scale=D**-0.5),
        r(3 * D, scale=0.1),
        r(D, D, scale=D**-0.5),
        r(D, scale=0.1),
        r(D, scale=0.1, shift=1.0),
        r(D, scale=0.1),
    ]


@pytest.mark.filterwarnings("ignore::UserWarning")  # sdpa_kernel warns when a pinned backend declines
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("d", HEAD_DIMS, ids=lambda d: f"d{d}")
@pytest.mark.parametrize("N", SEQ, ids=lambda n: f"N{n}")
def test_attention(benchmark, N, d, impl, mode):
    heads = D_MODEL // d
    B = 16 if N <= 1024 else 4
    backward = mode == "fwd+bwd"
    inp = _inputs(B, N, backward)
    backend = "triton" if impl == "fused" else "reference"
    why = attention_op.get(backend).not_supported_reasons(z=inp[0], num_heads=heads)
    if why:
        pytest.skip(f"{impl}: " + "; ".join(why))
    dy = torch.randn(B, N, D_MODEL, device="cuda", dtype=DTYPE)

    def call():
        out = attention(*inp, heads, 1e-5, backend=backend)
        if backward:
            out.backward(dy)

    inner = 10 if N <= 1024 else 3

    def step():
        for _ in range(inner):
            call()
        torch.cuda.synchronize()

    with _sdpa_context(impl):
        try:
            call()  # warm-up: Triton JIT, cuBLAS/cuDNN plans; also proves this SDPA backend runs here
            torch.cuda.synchronize()
        except RuntimeError as exc:
            pytest.skip(f"{impl} does not run here: {str(exc).splitlines()[0]}")
        benchmark.group = f"attention N={N} d={d} {mode}"
        benchmark.pedantic(step, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    per_call = benchmark.stats.stats.median / inner
    flops = 4 * B * heads * N * N * d * (3.5 if backward else 1.0)
    benchmark.extra_info.update(
        device=torch.cuda.get_device_name(),
        torch=torch.__version__,
        triton=__import__("triton").__version__,
        impl=impl,
        batch=B,
        heads=heads,
        ms_per_call=per_call * 1e3,
        attention_tflops=flops / per_call / 1e12,
    )
    _MEDIANS[(N, d, mode, impl)] = per_call


@pytest.fixture(scope="module", autouse=True)
def _print_speedups():
    """After the module: per case, the fused time, its speedup over each baseline, and the two targets."""
    yield
    if not _MEDIANS:
        return
    lines = []
    for N in SEQ:
        for d in HEAD_DIMS:
            for mode in ("fwd", "fwd+bwd"):
                fused = _MEDIANS.get((N, d, mode, "fused"))
                if fused is None:
                    continue
                parts = [f"N={N:5d} d={d:3d} {mode:8s} fused {fused * 1e3:8.3f} ms"]
                for impl in IMPLS[1:]:
                    base = _MEDIANS.get((N, d, mode, impl))
                    if base is not None:
                        parts.append(f"{impl} {base / fused:5.2f}x")
                auto, flash = _MEDIANS.get((N, d, mode, "sdpa-auto")), _MEDIANS.get((N, d, mode, "sdpa-flash"))
                if N <= 1024 and auto is not None:
                    parts.append("target>=1.3x " + ("met" if auto / fused >= 1.3 else "MISSED"))
                if N == 4096 and flash is not None:
                    parts.append("target>=0.8x flash " + ("met" if flash / fused >= 0.8 else "MISSED"))
                lines.append("  ".join(parts))
    print("\nattention (speedup = baseline time / fused time):\n" + "\n".join(lines))
