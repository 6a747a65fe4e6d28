"""SpectralKD loss, forward + backward: the reference and every usable fused backend in one run.

Shapes (B, T, C, H, W): (16, 10, 1, 64, 64) NSE, (32, 12, 3, 32, 64) WeatherBench, (8, 10, 2, 128, 128),
(4, 10, 1, 121, 240) a 1.5-degree global grid, (4, 13, 1, 32, 480) the paper's RBC grid and (8, 10, 1, 37, 49) a
regional grid (the last three not powers of two); cutoff 0.25, fp32 (plus bf16 on GPU). ``auto`` is the measured
dispatch (its pick, timed in the warm-up call, is recorded as ``extra_info["pick"]`` and printed with its ratio to
the same run's reference); ``name:path`` cases force one internal path. Group per shape; ``extra_info`` records the achieved bandwidth
against the one-read-of-s-and-t + one-write-of-the-gradient floor. On GPU it also records the call's
device time (profiler: the GPU work alone, without the host's per-call cost) and both as a fraction of the
HBM bound measured by a device-to-device copy in the same run. ``test_spectral_loss_paired`` times each fast
backend with a reference call before every round and the caches flushed before each call (interleaved and
cold: robust to a shared machine's drift, and what a training step sees). A module fixture prints speedups
at the end (-s).

    pytest bench/bench_spectral_loss.py --benchmark-only                  # GPU if present, else CPU
    pytest bench/bench_spectral_loss.py --benchmark-only --benchmark-json=out.json
"""

from __future__ import annotations

import importlib
import os
import statistics
import time

import pytest
import torch
from _device_time import copy_bandwidth, device_time_per_call

from sdkd.ops.spectral_loss import spectral_loss, spectral_loss_backend, spectral_loss_op

SL = importlib.import_module("sdkd.ops.spectral_loss")
PLAN = importlib.import_module("sdkd.ops.spectral_loss.plan")

SHAPES = [
    (16, 10, 1, 64, 64),
    (32, 12, 3, 32, 64),
    (8, 10, 2, 128, 128),
    (4, 10, 1, 121, 240),
    (4, 13, 1, 32, 480),
    (8, 10, 1, 37, 49),
]
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DTYPES = [torch.float32, torch.bfloat16] if DEVICE.type == "cuda" else [torch.float32]
# "auto": measured dispatch (its pick is timed in the warm-up call and recorded in extra_info["pick"]); "cpu",
# "cuda", "triton": the static order's path; "name:path" forces one internal path (skipped where not offered)
BACKENDS = [
    "auto",
    "reference",
    "cpu",
    "cpu:box",
    "cpu:torch_fft",
    "cuda",
    "cuda:fft_kernel",
    "cuda:box",
    "cuda:torch_fft",
    "triton",
    "triton:box",
    "triton:torch_fft",
]
ROUNDS = int(os.environ.get("SDKD_BENCH_ROUNDS", "30" if DEVICE.type == "cuda" else "15"))
_MEDIANS: dict[tuple, float] = {}
_DEVICE: dict[tuple, float] = {}  # device seconds per call (GPU)
_PICKS: dict[tuple, str] = {}  # the backend (and path) each case ran


def _usable(backend: str, s: torch.Tensor) -> list[str]:
    name, _, path = backend.partition(":")
    if name == "auto":
        return []
    if name == "triton" and s.device.type != "cuda":
        return ["triton is benchmarked on GPU only (the CPU interpreter is not a fast path)"]
    b = spectral_loss_op.get(name)
    why = b.not_supported_reasons(s=s, t=s, cutoffs=(0.25,), requested="auto")
    if not why and path and path not in b.runnable_paths(s=s, t=s, cutoffs=(0.25,)):
        why = [f"no path {path!r} here"]
    return why


def _sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_spectral_loss_fwd_bwd(benchmark, shape, backend, dtype):
    g = torch.Generator(device=DEVICE).manual_seed(0)
    s = torch.randn(shape, device=DEVICE, generator=g).to(dtype).requires_grad_()
    t = torch.randn(shape, device=DEVICE, generator=g).to(dtype)
    label = backend
    why = _usable(backend, s)
    if why:
        pytest.skip(f"{backend}: " + "; ".join(why))

    def step():
        s.grad = None
        spectral_loss(s, t, 0.25, backend=backend, check=False).backward()
        _sync()

    step()  # warm-up: JIT, FFT plans, tables
    benchmark.group = f"spectral_loss {'x'.join(map(str, shape))} {str(dtype).replace('torch.', '')}"
    benchmark.pedantic(step, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    if benchmark.stats is None:  # --benchmark-disable: ran once, nothing measured
        return
    median = benchmark.stats.stats.median
    floor_bytes = 3 * s.numel() * s.element_size()  # read s and t, write the gradient
    benchmark.extra_info.update(
        device=torch.cuda.get_device_name() if DEVICE.type == "cuda" else "cpu",
        torch=torch.__version__,
        backend=label,
        pick=spectral_loss_backend(s, t, 0.25, backend=backend),
        gbytes_per_s=floor_bytes / median / 1e9,
    )
    _MEDIANS[(shape, dtype, label)] = median
    _PICKS[(shape, dtype, label)] = benchmark.extra_info["pick"]
    dev_s = device_time_per_call(step)  # after the timed rounds: the profiler adds host cost of its own
    peak = copy_bandwidth()
    if dev_s is not None and peak:
        _DEVICE[(shape, dtype, label)] = dev_s
        benchmark.extra_info.update(
            device_seconds=dev_s,
            copy_gbytes_per_s=peak / 1e9,
            hbm_fraction_call=floor_bytes / median / peak,
            hbm_fraction_device=floor_bytes / dev_s / peak,
        )


PAIRED = ["auto", "cpu", "cuda", "triton"]
_FLUSH: list[torch.Tensor] = []


def _flush_caches() -> None:
    """Write a buffer larger than the last-level cache (CPU L3 / GPU L2), evicting every input."""
    if not _FLUSH:
        _FLUSH.append(torch.zeros(64 * 2**20 // 4 if DEVICE.type == "cpu" else 256 * 2**20 // 4, device=DEVICE))
    _FLUSH[0].add_(1.0)
    _sync()


_PAIRED: dict[tuple, tuple[float, float, float]] = {}  # (shape, dtype, backend) -> (ref, fast, median ratio)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("backend", PAIRED)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_spectral_loss_paired(benchmark, shape, backend, dtype):
    """Cold caches, interleaved: each round flushes the caches, times a reference call, flushes again and times
    the fast call (pedantic's untimed setup does the first three), so both see the same machine state and
    neither finds its inputs cached by the other. On a shared VM whose speed drifts by 10-20 % over a minute
    the ratio of two separate tests carries that drift; interleaving without the flushes is biased instead
    (the reference's temporaries evict s and t before the fast call, the fast call leaves them cached for the
    reference). A training step runs the model between loss calls, so cold is also the realistic case."""
    g = torch.Generator(device=DEVICE).manual_seed(0)
    s = torch.randn(shape, device=DEVICE, generator=g).to(dtype).requires_grad_()
    t = torch.randn(shape, device=DEVICE, generator=g).to(dtype)
    why = _usable(backend, s)
    if why:
        pytest.skip(f"{backend}: " + "; ".join(why))
    ref_times, fast_times = [], []

    def run(name):
        s.grad = None
        spectral_loss(s, t, 0.25, backend=name, check=False).backward()
        _sync()

    def ref_then_fast_setup():
        _flush_caches()
        t0 = time.perf_counter()
        run("reference")
        ref_times.append(time.perf_counter() - t0)
        _flush_caches()

    def fast():
        t0 = time.perf_counter()
        run(backend)
        fast_times.append(time.perf_counter() - t0)

    run("reference"), run(backend)  # warm-up
    benchmark.group = f"spectral_loss paired {'x'.join(map(str, shape))} {str(dtype).replace('torch.', '')}"
    benchmark.pedantic(fast, setup=ref_then_fast_setup, rounds=ROUNDS, iterations=1)
    if benchmark.stats is None or not ref_times:  # --benchmark-disable: nothing measured
        return
    ratios = [r / f for r, f in zip(ref_times, fast_times)]
    ref, med = statistics.median(ref_times), statistics.median(fast_times)
    benchmark.extra_info.update(
        device=torch.cuda.get_device_name() if DEVICE.type == "cuda" else "cpu",
        torch=torch.__version__,
        backend=backend,
        pick=spectral_loss_backend(s, t, 0.25, backend=backend),
        reference_median_s=ref,
        speedup_of_medians=ref / med,
        speedup_median_of_pairs=statistics.median(ratios),
    )
    _PAIRED[(shape, dtype, backend)] = (ref, med, statistics.median(ratios))


@pytest.fixture(scope="module", autouse=True)
def _print_speedups():
    """After the module: every case's median and its speedup over the reference."""
    yield
    if not _MEDIANS and not _PAIRED:
        return
    lines = []
    for (shape, dtype, backend), med in sorted(_MEDIANS.items(), key=lambda kv: str(kv[0])):
        ref = _MEDIANS.get((shape, dtype, "reference"))
        speed = f"{ref / med:6.2f}x vs reference" if ref else ""
        pick = _PICKS.get((shape, dtype, backend), "")
        name = backend if pick == backend else f"{backend} ({pick})"
        line = f"{'x'.join(map(str, shape)):18s} {str(dtype):15s} {name:24s} {med * 1e3:9.3f} ms {speed}"
        dev, dev_ref = _DEVICE.get((shape, dtype, backend)), _DEVICE.get((shape, dtype, "reference"))
        if dev is not None:
            line += f" | device {dev * 1e6:8.1f} us"
            line += f" ({dev_ref / dev:6.2f}x)" if dev_ref else ""
        lines.append(line)
    peak = copy_bandwidth()
    head = f" (device-to-device copy: {peak / 1e9:.0f} GB/s)" if peak else ""
    print(f"\nspectral_loss fwd+bwd medians{head}:\n" + "\n".join(lines))
    if _PAIRED:
        print("interleaved with the reference, cold caches (flush, reference call, flush, fast call, per round):")
        for (shape, dtype, backend), (ref, med, ratio) in sorted(_PAIRED.items(), key=lambda kv: str(kv[0])):
            print(
                f"{'x'.join(map(str, shape)):18s} {str(dtype):15s} {backend:10s} {med * 1e3:9.3f} ms "
                f"(reference {ref * 1e3:8.3f} ms) {ref / med:6.2f}x; median of pair ratios {ratio:6.2f}x"
            )
