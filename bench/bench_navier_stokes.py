"""Navier–Stokes generator throughput: batched solver vs a per-sample loop (same steps, same data).

CPU: 16 samples of 32², 10 fixed steps. GPU (skipped without CUDA): FNO's 1200 × 64² chunk, 20 fixed steps, plus the
per-sample loop on 32 of them. ``extra_info["samples_per_s"]`` is the throughput; ``us_per_sample_step`` the cost of
one sample-step (FNO's set needs ≈ 1200 × (steps per trajectory) of those).
"""

from __future__ import annotations

import pytest
import torch

from sdkd.data import navier_stokes as ns

STEPS_CPU, STEPS_GPU = 10, 20
DT = 1e-3
GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _batched(w0, steps):
    return ns.solve(w0, visc=1e-3, t_final=steps * DT, record_steps=1, dt=DT)


def _loop(w0, steps):
    return torch.cat([_batched(w0[i : i + 1], steps) for i in range(w0.shape[0])])


def _sync(fn):
    def run(*args):
        out = fn(*args)
        if out.is_cuda:
            torch.cuda.synchronize()
        return out

    return run


def _record(benchmark, n, steps):
    mean = benchmark.stats.stats.mean
    benchmark.extra_info["samples_per_s"] = n / mean
    benchmark.extra_info["us_per_sample_step"] = mean / (n * steps) * 1e6
    if torch.cuda.is_available():
        benchmark.extra_info["gpu"] = torch.cuda.get_device_name()


@pytest.fixture(scope="module")
def cpu_chunk():
    return ns.gaussian_random_field(16, 32, seed=0)


@pytest.mark.benchmark(group="navier_stokes-cpu")
def test_ns_cpu_batched(benchmark, cpu_chunk):
    out = benchmark.pedantic(_batched, args=(cpu_chunk, STEPS_CPU), rounds=3, warmup_rounds=1)
    assert out.shape == (16, 1, 32, 32)
    _record(benchmark, 16, STEPS_CPU)


@pytest.mark.benchmark(group="navier_stokes-cpu")
def test_ns_cpu_per_sample_loop(benchmark, cpu_chunk):
    out = benchmark.pedantic(_loop, args=(cpu_chunk, STEPS_CPU), rounds=3, warmup_rounds=1)
    torch.testing.assert_close(out, _batched(cpu_chunk, STEPS_CPU))  # same work, same answer
    _record(benchmark, 16, STEPS_CPU)


@pytest.fixture(scope="module")
def gpu_chunk():
    return ns.gaussian_random_field(1200, 64, seed=0, device="cuda")


@GPU
@pytest.mark.gpu
@pytest.mark.benchmark(group="navier_stokes-gpu")
def test_ns_gpu_batched_fno_chunk(benchmark, gpu_chunk):
    out = benchmark.pedantic(_sync(_batched), args=(gpu_chunk, STEPS_GPU), rounds=5, warmup_rounds=1)
    assert bool(torch.isfinite(out).all())
    _record(benchmark, 1200, STEPS_GPU)


@GPU
@pytest.mark.gpu
@pytest.mark.benchmark(group="navier_stokes-gpu")
def test_ns_gpu_per_sample_loop(benchmark, gpu_chunk):
    out = benchmark.pedantic(_sync(_loop), args=(gpu_chunk[:32], STEPS_GPU), rounds=3, warmup_rounds=1)
    assert out.shape == (32, 1, 64, 64)
    _record(benchmark, 32, STEPS_GPU)
