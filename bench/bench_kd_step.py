"""Time of one KD training step (forward, backward, Adam step) on the NSE shape, per strategy.

NSE sample (10, 1, 64, 64) -> 10 frames, U-Net student (nse preset), batch 16. Cases, all in
the pytest-benchmark group ``kd_step``: no KD; single-teacher SpectralKD with the live
ST-AlterNet teacher and with cached teacher outputs; aver / a2d / camkd with two live teachers
(ST-AlterNet + SimVP); plus a2d with cached teachers and a2d in parameter space. The last
test prints every case's median relative to no KD.

    pytest bench/bench_kd_step.py --benchmark-only          # GPU if present, else CPU
    SDKD_BENCH_KD_BATCH=4 pytest bench/bench_kd_step.py ...  # smaller batch for a quick CPU check
"""

from __future__ import annotations

import os

import pytest
import torch

from sdkd.distill import Distiller, TeacherCache
from sdkd.losses import SpectralKD

IN_SHAPE = (10, 1, 64, 64)
OUT_FRAMES = 10
BATCH = int(os.environ.get("SDKD_BENCH_KD_BATCH", "16"))
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
ROUNDS, WARMUP = (20, 3) if DEVICE.type == "cuda" else (3, 1)
CACHE_BATCHES = 4  # the cache covers this many batches; steps walk through them

_MEDIANS: dict[str, float] = {}


def _models():
    models = pytest.importorskip("sdkd.models")
    needed = {"unet", "st_alternet", "simvp"}
    if not needed <= set(models.list_models()):
        pytest.skip(f"models not registered yet: {sorted(needed - set(models.list_models()))}")
    torch.manual_seed(42)
    student = models.build_preset("nse", "unet").to(DEVICE)
    t1 = models.build_preset("nse", "st_alternet").to(DEVICE)
    t2 = models.build_preset("nse", "simvp").to(DEVICE)
    return student, t1, t2


@pytest.fixture(scope="module")
def setup():
    student, t1, t2 = _models()
    n = BATCH * CACHE_BATCHES
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, *IN_SHAPE, generator=g)
    y = torch.randn(n, OUT_FRAMES, *IN_SHAPE[1:], generator=g)
    data = list(zip(x, y))
    cache1 = TeacherCache.build(t1, data, batch_size=BATCH, device=DEVICE)
    cache2 = TeacherCache.build([t1, t2], data, batch_size=BATCH, device=DEVICE)
    return {"student": student, "t1": t1, "t2": t2, "x": x.to(DEVICE), "y": y.to(DEVICE), "c1": cache1, "c2": cache2}


def _sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def _run(benchmark, name, setup, make):
    """Benchmark one step of ``make(student) -> step(x, y, idx)`` with a fresh Adam state."""
    student = setup["student"]
    state = {k: v.clone() for k, v in student.state_dict().items()}
    step_fn = make(student)
    opt = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=1e-4)
    counter = {"i": 0}

    def step():
        b = counter["i"] % CACHE_BATCHES
        counter["i"] += 1
        idx = torch.arange(b * BATCH, (b + 1) * BATCH)
        x, y = setup["x"][b * BATCH : (b + 1) * BATCH], setup["y"][b * BATCH : (b + 1) * BATCH]
        opt.zero_grad(set_to_none=True)
        step_fn(x, y, idx)
        opt.step()
        _sync()

    benchmark.group = "kd_step"
    benchmark.extra_info.update({"device": str(DEVICE), "batch": BATCH, "case": name})
    benchmark.pedantic(step, rounds=ROUNDS, warmup_rounds=WARMUP, iterations=1)
    student.load_state_dict(state)  # every case starts from the same weights
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        _MEDIANS[name] = stats.stats.median


def _distill(strategy, teachers=None, cache=None, **kw):
    def make(student):
        d = Distiller(student, teachers, strategy=strategy, kd_loss=SpectralKD(), lam=1.0, cache=cache, **kw)

        def step(x, y, idx):
            out = d(x, y, index=idx) if cache is not None else d(x, y)
            d.backward(out)

        return step

    return make


def _no_kd(student):
    mse = torch.nn.MSELoss()

    def step(x, y, idx):
        mse(student(x), y).backward()

    return step


def test_no_kd(benchmark, setup):
    _run(benchmark, "no_kd", setup, _no_kd)


def test_single_live(benchmark, setup):
    _run(benchmark, "single_live", setup, _distill("single", [setup["t1"]]))


def test_single_cached(benchmark, setup):
    _run(benchmark, "single_cached", setup, _distill("single", cache=setup["c1"]))


def test_aver_live(benchmark, setup):
    _run(benchmark, "aver_live", setup, _distill("aver", [setup["t1"], setup["t2"]]))


def test_a2d_live(benchmark, setup):
    _run(benchmark, "a2d_live", setup, _distill("a2d", [setup["t1"], setup["t2"]]))


def test_camkd_live(benchmark, setup):
    _run(benchmark, "camkd_live", setup, _distill("camkd", [setup["t1"], setup["t2"]]))


def test_a2d_cached(benchmark, setup):
    _run(benchmark, "a2d_cached", setup, _distill("a2d", cache=setup["c2"]))


def test_a2d_params_cached(benchmark, setup):
    _run(benchmark, "a2d_params_cached", setup, _distill("a2d", cache=setup["c2"], grad_space="params"))


def test_zz_ratios():
    """Print each case's median step time relative to no KD (run after the cases above)."""
    if "no_kd" not in _MEDIANS:
        pytest.skip("no timings recorded (benchmarks disabled or skipped)")
    base = _MEDIANS["no_kd"]
    lines = [f"KD step on {DEVICE} (batch {BATCH}), median, relative to no KD:"]
    lines += [f"  {k:<18} {v * 1e3:9.2f} ms  x{v / base:5.2f}" for k, v in _MEDIANS.items()]
    print("\n".join(lines))
