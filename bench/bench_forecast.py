"""Forecasting speed: the teacher vs each student, eager and exported (onnxruntime CPU), in one run.

NSE shape (10, 1, 64, 64) -> 10 frames with the nse presets, z-score normalisation included
(``NormalizedModel``, as ``Forecaster`` and the exported graphs run it). Two groups:
``forecast_b1`` (single-sample latency, batch 1) and ``forecast_b64`` (throughput, batch 64).
Cases: ``st_alternet`` eager (the reference), ``<student>`` eager and ``<student>-onnx``
(exported with ``sdkd.export``, run by onnxruntime on the CPU). Eager models run on the GPU when
there is one. Each case records its speed-up over the eager teacher and its samples/s in
``extra_info``; a summary table is printed at the end (``-s``).

    pytest bench/bench_forecast.py --benchmark-only -s
    SDKD_BENCH_FORECAST_BATCHES=1,8 pytest bench/bench_forecast.py --benchmark-only -s   # quick CPU check
    SDKD_BENCH_FORECAST_ROUNDS=10 ...                                                     # steadier CPU medians
"""

from __future__ import annotations

import os
import statistics

import pytest
import torch

IN_SHAPE, OUT_FRAMES = (10, 1, 64, 64), 10
BATCHES = tuple(int(b) for b in os.environ.get("SDKD_BENCH_FORECAST_BATCHES", "1,64").split(","))
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
ROUNDS, WARMUP = (20, 5) if DEVICE.type == "cuda" else (int(os.environ.get("SDKD_BENCH_FORECAST_ROUNDS", "3")), 1)
TEACHER, STUDENTS = "st_alternet", ("unet", "resnet", "mixer")
CASES = [TEACHER, *STUDENTS, *(f"{s}-onnx" for s in STUDENTS)]  # teacher first: the ratios need it

_MEDIANS: dict[tuple[int, str], float] = {}


def _module(name: str) -> torch.nn.Module:
    from sdkd.forecast import NormalizedModel
    from sdkd.models import build_preset

    torch.manual_seed(42)
    return NormalizedModel(build_preset("nse", name), torch.zeros(1), torch.ones(1)).eval()


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    """Each student exported once (lazily), to a module-scoped temporary folder."""
    folder, files = tmp_path_factory.mktemp("onnx"), {}

    def get(name: str):
        if name not in files:
            pytest.importorskip("onnxscript", reason="ONNX export needs onnx and onnxscript (sdkd[export])")
            from sdkd.export import export_module

            example = torch.randn(2, *IN_SHAPE)
            files[name] = export_module(_module(name), example, folder / f"{name}.onnx", "onnx")
        return files[name]

    return get


@pytest.fixture(scope="module", autouse=True)
def _report():
    """After the module: each case's median time, samples/s and speed-up over the eager teacher (see ``-s``)."""
    yield
    for batch in BATCHES:
        if (batch, TEACHER) not in _MEDIANS:
            continue
        t = _MEDIANS[(batch, TEACHER)]
        rows = [
            f"  {name:<14} {m * 1e3:9.2f} ms  {batch / m:9.1f} samples/s  {t / m:6.2f}x"
            for (b, name), m in _MEDIANS.items()
            if b == batch
        ]
        print(f"\n[forecast, batch {batch}, eager on {DEVICE}, onnx on cpu]\n" + "\n".join(rows))


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("case", CASES)
def test_forecast_speed(benchmark, onnx_files, case, batch):
    name, exported = case.removesuffix("-onnx"), case.endswith("-onnx")
    x = torch.randn(batch, *IN_SHAPE)
    if exported:
        ort = pytest.importorskip("onnxruntime", reason="needs onnxruntime (sdkd[export])")
        session = ort.InferenceSession(str(onnx_files(name)), providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x.numpy()}

        def step():
            return session.run(None, feed)[0]

        device = "cpu (onnxruntime)"
    else:
        model = _module(name).to(DEVICE)
        x = x.to(DEVICE)

        def step():
            with torch.inference_mode():
                y = model(x)
            if DEVICE.type == "cuda":
                torch.cuda.synchronize()
            return y

        device = str(DEVICE)
    benchmark.group = f"forecast_b{batch}"
    benchmark.extra_info.update(case=case, batch=batch, in_shape=IN_SHAPE, device=device)
    y = benchmark.pedantic(step, rounds=ROUNDS, warmup_rounds=WARMUP, iterations=1)
    assert tuple(y.shape) == (batch, OUT_FRAMES, *IN_SHAPE[1:])
    stats = getattr(benchmark, "stats", None)
    if stats is None:  # --benchmark-disable: nothing measured
        return
    median = statistics.median(stats.stats.data)
    _MEDIANS[(batch, case)] = median
    benchmark.extra_info["samples_per_s"] = round(batch / median, 2)
    if (batch, TEACHER) in _MEDIANS and case != TEACHER:
        benchmark.extra_info[f"speedup_vs_{TEACHER}"] = round(_MEDIANS[(batch, TEACHER)] / median, 3)
