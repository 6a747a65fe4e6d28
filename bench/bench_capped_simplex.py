"""Benchmarks: capped-simplex projection and the A2D weight solver, every backend next to the reference.

Run with ``pytest bench/bench_capped_simplex.py --benchmark-only`` (pytest-benchmark groups the
backends of one shape together, so each fast path is compared with the reference in the same run).
Backends that cannot run here (no GPU, extension not built) are skipped with the reason; the Triton
interpreter is skipped (it measures numpy, not the kernel). GPU timings synchronise the device.

Shapes (issue 7): projection of 2^16 and 2^20 rows x M in {2, 4, 8, 16}; A2D for B in
{16, 256, 4096} with M in {2, 4, 8}. ``SDKD_BENCH_QUICK=1`` keeps 2^16 rows and B <= 256 (CPU machines).
GPU target (unmeasured here): the projection at 2^20 rows within 2x of the HBM bound (8*M bytes per row
in fp32: read y, write x).
"""

from __future__ import annotations

import os

import pytest
import torch

from sdkd.ops.capped_simplex import a2d_weights, a2d_weights_op, capped_simplex_op, capped_simplex_projection

QUICK = os.environ.get("SDKD_BENCH_QUICK") == "1"
ROWS = [1 << 16] if QUICK else [1 << 16, 1 << 20]
PROJ_M = [2, 4, 8, 16]
A2D_B = [16, 256] if QUICK else [16, 256, 4096]
A2D_M = [2, 4, 8]
BACKENDS = ["reference", "cpu", "cuda", "triton"]


def _device(name: str) -> str:
    """The device a backend's case runs on; skips the case when that is a GPU and none is present."""
    dev = "cuda" if name in ("cuda", "triton") else "cpu"
    if name == "reference" and os.environ.get("SDKD_BENCH_DEVICE") == "cuda":
        dev = "cuda"
    if dev == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    return dev


def _skip(op, name: str, **inputs) -> None:
    dev = _device(name)
    if dev == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    why = op.get(name).not_supported_reasons(requested=name, **inputs)
    if why:
        pytest.skip(f"{name}: {'; '.join(why)}")


def _timed(benchmark, fn, device: str, rounds: int):
    def run():
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    run()  # warm-up (compiles Triton, loads the extension)
    return benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("M", PROJ_M)
@pytest.mark.parametrize("rows", ROWS)
def test_projection(benchmark, backend, M, rows):
    benchmark.group = f"capped_simplex_projection rows={rows} M={M} fp32"
    dev = _device(backend)
    g = torch.Generator().manual_seed(0)
    y = (torch.randn(rows, M, generator=g) * 2).to(dev)
    _skip(capped_simplex_op, backend, y=y)
    C = max(0.6, 1.0 / M)
    rounds = 3 if backend == "reference" and rows > (1 << 16) else 10
    x = _timed(benchmark, lambda: capped_simplex_projection(y, C, backend=backend, check=False), dev, rounds)
    benchmark.extra_info["bytes"] = 2 * y.numel() * y.element_size()
    assert torch.allclose(x.sum(-1), torch.ones(rows, device=dev), atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("M", A2D_M)
@pytest.mark.parametrize("B", A2D_B)
def test_a2d_solve(benchmark, backend, M, B):
    benchmark.group = f"a2d_weights B={B} M={M} fp32"
    dev = _device(backend)
    g = torch.Generator().manual_seed(0)
    V = torch.randn(B, M, 64, generator=g)
    G = (V @ V.mT).to(dev)
    _skip(a2d_weights_op, backend, gram=G)
    rounds = 3 if backend == "reference" else 10
    a, r = _timed(benchmark, lambda: a2d_weights(G, max(0.6, 1.0 / M), backend=backend, check=False), dev, rounds)
    benchmark.extra_info["max_kkt_residual"] = float(r.max())
    assert torch.isfinite(a).all()
