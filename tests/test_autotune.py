"""Measured ``auto`` dispatch (issue 18): the fastest candidate wins, picks persist across processes, a bad
saved pick or picks file never selects a backend that refuses the call, and the switches give the static order.

The suite runs with ``SDKD_AUTOTUNE=0`` and a temporary ``SDKD_CACHE_DIR`` (tests/conftest.py); the tests here
switch tuning on and point the cache at their own ``tmp_path``.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from sdkd.ops import _dispatch
from sdkd.ops._dispatch import Backend, BackendUnavailableError, Op, Tuning
from sdkd.ops._ext import unavailable_reason
from sdkd.ops._tuning_cache import TUNING_CACHE, cache_file
from sdkd.ops.spectral_loss import spectral_loss, spectral_loss_op, spectral_loss_reference

ROOT = Path(__file__).resolve().parents[1]
HAS_CPU = unavailable_reason("spectral_loss_cpu") is None


@pytest.fixture
def tuning_on(monkeypatch, tmp_path):
    """Autotune on, picks saved under ``tmp_path``, no pick remembered from another test."""
    monkeypatch.setenv("SDKD_AUTOTUNE", "1")
    monkeypatch.setenv("SDKD_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("SDKD_BACKEND", raising=False)
    spectral_loss_op.clear_picks()
    yield tmp_path
    spectral_loss_op.clear_picks()


class _FakeClock:
    """Stands in for ``time.perf_counter`` in the autotuner: the fake backends advance it by their declared cost
    instead of sleeping, so which one is fastest does not depend on how busy the machine is."""

    now = 0.0

    @classmethod
    def perf_counter(cls) -> float:
        return cls.now


@pytest.fixture
def fake_clock(monkeypatch):
    from sdkd.ops import _autotune

    monkeypatch.setattr(_autotune, "time", _FakeClock)


def _sleeper(seconds: float, log: list[str] | None = None, name: str = ""):
    def fn(x, path=None):
        if log is not None:
            log.append(name if path is None else f"{name}:{path}")
        _FakeClock.now += seconds if path != "fast" else 0.0
        return x

    return fn


def _fake_op(log: list[str], refuse: bool = False) -> Op:
    """``slowpoke`` (first in the static order, 20 ms), ``fake`` with a 20 ms and a 0 ms path, the reference 5 ms;
    ``picky`` refuses every input when ``refuse``."""
    return Op(
        name="fake_op",
        backends=[
            Backend("picky", _sleeper(0.0, log, "picky"), lambda **_: ["refuses everything"] if refuse else []),
            Backend("slowpoke", _sleeper(0.02, log, "slowpoke")),
            Backend("fake", _sleeper(0.02, log, "fake"), paths=lambda **_: ["slow", "fast"]),
            Backend("reference", _sleeper(0.005, log, "reference")),
        ],
        auto_key=lambda x=None, **_: None if x is None else (x.dtype, x.shape),
        tuning=Tuning(key=lambda x=None, **_: tuple(x.shape), bench=lambda b, x=None, **_: lambda: b.fn(x)),
    )


def test_a_deliberately_slowed_backend_is_never_picked(fake_clock, tuning_on):
    log: list[str] = []
    op = _fake_op(log, refuse=True)
    x = torch.zeros(3)
    chosen = op.select("auto", x=x)
    assert chosen.label == "fake:fast"
    assert "slowpoke" in log and "reference" in log and "fake:slow" in log and "picky" not in log
    log.clear()
    assert op.select("auto", x=x).label == "fake:fast" and log == []  # remembered: no timing on later calls
    saved = next(iter(TUNING_CACHE.entries().values()))
    assert (
        saved["backend"] == "fake"
        and saved["path"] == "fast"
        and set(saved["ms"])
        == {
            "slowpoke",
            "fake:slow",
            "fake:fast",
            "reference",
        }
    )


def test_switches_give_the_static_order(fake_clock, tuning_on, monkeypatch):
    log: list[str] = []
    x = torch.zeros(3)
    monkeypatch.setenv("SDKD_AUTOTUNE", "0")
    assert _fake_op(log).select("auto", x=x).label == "picky"
    monkeypatch.setenv("SDKD_AUTOTUNE", "1")
    with _deterministic():
        assert _fake_op(log).select("auto", x=x).label == "picky"  # stable across runs: no timing
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert _fake_op(log).select("auto", x=x).label == "picky"  # tracing: nothing is timed
    assert log == [] and not cache_file().exists()
    monkeypatch.undo()
    monkeypatch.setenv("SDKD_AUTOTUNE", "1")
    monkeypatch.setenv("SDKD_CACHE_DIR", str(tuning_on))
    monkeypatch.setenv("SDKD_BACKEND", "fake:slow")
    assert _fake_op(log).select("auto", x=x).label == "fake:slow" and log == []  # SDKD_BACKEND still forces


class _deterministic:
    def __enter__(self):
        self.was = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True)

    def __exit__(self, *exc):
        torch.use_deterministic_algorithms(self.was)


def test_a_wrong_saved_pick_cannot_select_a_backend_that_refuses(fake_clock, tuning_on):
    log: list[str] = []
    op = _fake_op(log, refuse=True)
    x = torch.zeros(3)
    key = op._saved_key((x.dtype, x.shape), tuple(x.shape), x.device)
    for bad in ({"backend": "picky", "path": None}, {"backend": "fake", "path": "warp"}, {"backend": "gone"}):
        cache_file().parent.mkdir(parents=True, exist_ok=True)
        cache_file().write_text(json.dumps({"format": 1, "entries": {key: bad}}))
        op.clear_picks()
        assert op.select("auto", x=x).label == "fake:fast", bad  # ignored and measured again
    assert TUNING_CACHE.get(key)["path"] == "fast"  # and the measured pick replaced it


def test_a_corrupt_picks_file_is_ignored_with_a_warning_and_left_alone(fake_clock, tuning_on):
    cache_file().parent.mkdir(parents=True, exist_ok=True)
    cache_file().write_text("{ not json")
    op = _fake_op([], refuse=True)
    with pytest.warns(UserWarning, match="ignoring the autotune cache"):
        assert op.select("auto", x=torch.zeros(3)).label == "fake:fast"
    assert cache_file().read_text() == "{ not json"


def test_explicit_path_is_checked():
    op = _fake_op([])
    assert op.select("fake:fast", x=torch.zeros(3)).label == "fake:fast"
    with pytest.raises(BackendUnavailableError, match="no path 'warp'.*slow"):
        op.select("fake:warp", x=torch.zeros(3))
    with pytest.raises(BackendUnavailableError, match="single path"):
        op.select("reference:fast", x=torch.zeros(3))


@pytest.mark.skipif(not HAS_CPU, reason="sdkd._C not built")
@pytest.mark.parametrize("path", ["fft_kernel", "box", "torch_fft"])
def test_spectral_loss_forced_paths_match_the_reference(path):
    s = torch.randn(2, 3, 16, 32, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 3, 16, 32, dtype=torch.float64)
    loss = spectral_loss(s, t, (0.1, 0.3), [1.0, 2.0, 0.5], backend=f"cpu:{path}")
    (g,) = torch.autograd.grad(loss, s)
    s2 = s.detach().requires_grad_()
    ref = spectral_loss_reference(s2, t, (0.1, 0.3), [1.0, 2.0, 0.5])
    (g2,) = torch.autograd.grad(ref, s2)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(g, g2)


@pytest.mark.skipif(not HAS_CPU, reason="sdkd._C not built")
def test_spectral_loss_fft_kernel_path_is_refused_where_it_cannot_run():
    ok = torch.randn(2, 16, 16)
    spectral_loss(ok, ok.clone(), backend="cpu:fft_kernel")  # same auto_key as below: nothing remembered from it
    s = torch.randn(2, 12, 6)  # W < 8: no 8-lane row vector
    with pytest.raises(BackendUnavailableError, match="no path 'fft_kernel'"):
        spectral_loss(s, s.clone(), backend="cpu:fft_kernel")


_PICK_SCRIPT = textwrap.dedent(
    """
    import torch
    from sdkd.ops import _dispatch
    from sdkd.ops.spectral_loss import spectral_loss, spectral_loss_op
    def no_timing(*a, **k):
        raise AssertionError("the saved pick should have been reused")
    _dispatch.measure = no_timing
    s = torch.randn(2, 1, 12, 20, requires_grad=True)
    spectral_loss(s, torch.randn(2, 1, 12, 20)).backward()
    print([b.label for k, b in spectral_loss_op._picks.items() if k[0] == "tuned"])
    """
)


def test_a_second_process_reuses_the_saved_pick(tuning_on):
    s = torch.randn(2, 1, 12, 20, requires_grad=True)
    spectral_loss(s, torch.randn(2, 1, 12, 20)).backward()  # tuned here, saved under tmp_path
    here = [b.label for k, b in spectral_loss_op._picks.items() if k[0] == "tuned"]
    assert here and cache_file().exists()
    other = subprocess.run([sys.executable, "-c", _PICK_SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert other.returncode == 0, other.stderr
    assert other.stdout.strip() == str(here)


_WRITER = textwrap.dedent(
    """
    import importlib.util, sys
    spec = importlib.util.spec_from_file_location("tc", sys.argv[1])
    tc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tc)
    for i in range(25):
        assert tc.TUNING_CACHE.put(f"{sys.argv[2]}-{i}", {"backend": "reference", "path": None})
    """
)


def test_concurrent_writers_lose_no_pick_and_leave_a_whole_file(tuning_on):
    module = str(ROOT / "sdkd" / "ops" / "_tuning_cache.py")
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, module, name], cwd=ROOT, stderr=subprocess.PIPE)
        for name in ("a", "b")
    ]
    for p in procs:
        assert p.wait(timeout=60) == 0, p.stderr.read()
    entries = json.loads(cache_file().read_text())["entries"]
    assert set(entries) == {f"{n}-{i}" for n in "ab" for i in range(25)}


def test_tuning_cache_module_does_not_import_torch():
    """The writer test above loads it alone; it must stay importable without the package."""
    spec = importlib.util.find_spec("sdkd.ops._tuning_cache")
    assert "import torch\n\n" not in Path(spec.origin).read_text().split("def ")[0].split("if TYPE_CHECKING")[0]


@pytest.mark.skipif(not HAS_CPU, reason="sdkd._C not built")
def test_tuned_spectral_loss_is_correct_and_timed_once(tuning_on, monkeypatch):
    calls = []
    real = _dispatch.measure
    monkeypatch.setattr(_dispatch, "measure", lambda *a, **k: calls.append(1) or real(*a, **k))
    s = torch.randn(2, 1, 12, 20, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 1, 12, 20, dtype=torch.float64)
    for _ in range(3):
        loss = spectral_loss(s, t, 0.2)
        (g,) = torch.autograd.grad(loss, s)
    assert calls == [1] and s.grad is None  # tuning never leaves gradients on the caller's tensors
    s2 = s.detach().requires_grad_()
    ref = spectral_loss_reference(s2, t, 0.2)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(g, torch.autograd.grad(ref, s2)[0])


def test_sdkd_info_lists_tuned_picks(fake_clock, tuning_on, capsys):
    from sdkd.cli import main

    _fake_op([], refuse=True).select("auto", x=torch.zeros(3))
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "tuned picks (1;" in out and "fake_op |" in out and "-> fake:fast" in out and str(cache_file()) in out


def test_torch_compile_fullgraph_times_nothing(tuning_on, monkeypatch):
    """Under tracing the dispatcher takes the static order (a kind this process has not measured) and times
    nothing; the compiled loss matches eager."""
    monkeypatch.setattr(_dispatch, "measure", lambda *a, **k: pytest.fail("timed under torch.compile"))
    torch._dynamo.reset()
    s = torch.randn(2, 3, 16, 12, requires_grad=True)
    t = torch.randn(2, 3, 16, 12)
    compiled = torch.compile(lambda a, b: spectral_loss(a, b, 0.25), fullgraph=True, backend="eager")
    out = compiled(s, t)
    torch.testing.assert_close(out, spectral_loss_reference(s, t, 0.25))
    assert not cache_file().exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_tuning_times_every_path_and_matches_the_reference(tuning_on):
    """On a GPU the first auto call times every usable backend and path with CUDA events (the saved times list
    them), later calls reuse the pick, and the tuned loss and gradient match the reference."""
    s = torch.randn(4, 3, 32, 64, device="cuda", requires_grad=True)
    t = torch.randn(4, 3, 32, 64, device="cuda")
    loss = spectral_loss(s, t, 0.25)
    (g,) = torch.autograd.grad(loss, s)
    (saved,) = TUNING_CACHE.entries().values()
    assert "reference" in saved["ms"] and len(saved["ms"]) >= 2
    assert all(v is None or v > 0 for v in saved["ms"].values())
    s2 = s.detach().requires_grad_()
    ref = spectral_loss_reference(s2, t, 0.25)
    torch.testing.assert_close(loss, ref, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(g, torch.autograd.grad(ref, s2)[0], rtol=1e-4, atol=1e-6)
