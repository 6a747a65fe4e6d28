"""Inference latency of the default teacher vs each default student on the NSE shape.

NSE sample (10, 1, 64, 64) -> 10 frames, nse presets, batch 16, ``inference_mode``, eval mode.
Cases in the pytest-benchmark group ``inference_nse``: ``st_alternet`` (skipped until registered),
``unet``, ``resnet``, ``mixer``. Each student records its speed-up over the teacher in
``extra_info`` (printed at the end with ``-s``); the ``unet`` case checks the target: the default
U-Net student at least 5x faster than the default ST-AlterNet on CPU (the paper reports 2.28x on
GPU, so there it is only recorded).

    pytest bench/bench_models.py --benchmark-only                  # GPU if present, else CPU
    SDKD_BENCH_MODELS_BATCH=4 pytest bench/bench_models.py ...     # smaller batch for a quick CPU check
    SDKD_BENCH_THREADS=1 pytest bench/bench_models.py ...          # on a shared, oversubscribed CPU

On an oversubscribed CPU, OpenMP contention slows many small ops (the students) far more than a
few large ones (the teacher); one thread per process gives the fairer comparison there.
"""

from __future__ import annotations

import os
import statistics

import pytest
import torch

IN_SHAPE = (10, 1, 64, 64)
BATCH = int(os.environ.get("SDKD_BENCH_MODELS_BATCH", "16"))
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
ROUNDS, WARMUP = (30, 5) if DEVICE.type == "cuda" else (3, 1)
THREADS = int(os.environ.get("SDKD_BENCH_THREADS", "0"))  # CPU intra-op threads; 0 keeps torch's default
TEACHER, STUDENTS = "st_alternet", ("unet", "resnet", "mixer")
SPEEDUP_TARGET_CPU = 5.0

_MEDIANS: dict[str, float] = {}


def _build(name: str) -> torch.nn.Module:
    models = pytest.importorskip("sdkd.models")
    if name not in models.list_models():
        pytest.skip(f"{name} is not registered yet")
    torch.manual_seed(42)
    return models.build_preset("nse", name).to(DEVICE).eval()


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


@pytest.fixture(scope="module", autouse=True)
def _report():
    """Apply ``SDKD_BENCH_THREADS``; afterwards print each student's latency and speed-up (see ``-s``)."""
    threads = torch.get_num_threads()
    if THREADS > 0:
        torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(threads)
    if TEACHER in _MEDIANS:
        t = _MEDIANS[TEACHER]
        lines = [f"{n}: {m * 1e3:.1f} ms ({t / m:.2f}x)" for n, m in _MEDIANS.items() if n != TEACHER]
        print(f"\n[inference_nse, batch {BATCH}, {DEVICE}] {TEACHER}: {t * 1e3:.1f} ms; " + "; ".join(lines))


@pytest.mark.parametrize("name", [TEACHER, *STUDENTS])  # teacher first: the students' speed-ups need it
def test_inference_latency(benchmark, name):
    model = _build(name)
    x = torch.randn(BATCH, *IN_SHAPE, device=DEVICE)
    params = sum(p.numel() for p in model.parameters())

    def step():
        with torch.inference_mode():
            y = model(x)
        _sync()
        return y

    benchmark.group = "inference_nse"
    benchmark.extra_info.update(model=name, batch=BATCH, in_shape=IN_SHAPE, params=params, device=str(DEVICE))
    y = benchmark.pedantic(step, rounds=ROUNDS, warmup_rounds=WARMUP, iterations=1)
    assert y.shape == (BATCH, 10, *IN_SHAPE[1:])
    stats = getattr(benchmark, "stats", None)
    if stats is None:  # --benchmark-disable: nothing measured
        return
    _MEDIANS[name] = statistics.median(stats.stats.data)
    if name != TEACHER and TEACHER in _MEDIANS:
        speedup = _MEDIANS[TEACHER] / _MEDIANS[name]
        benchmark.extra_info[f"speedup_vs_{TEACHER}"] = round(speedup, 3)
        benchmark.extra_info["target_speedup_cpu"] = SPEEDUP_TARGET_CPU  # reported, not asserted
