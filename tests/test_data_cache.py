"""The on-disk data cache: atomic writes, metadata matching, completeness; the NS cache API and ``sdkd data``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import sdkd
from sdkd.cli import main
from sdkd.data import cache
from sdkd.data import navier_stokes as ns

TINY = dict(n=3, resolution=8, visc=1e-2, t_final=0.2, record_steps=2)


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


# ------------------------------------------------------------------------------------------------------------ helpers
def test_default_root_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SDKD_DATA_DIR", str(tmp_path / "data"))
    assert cache.default_root() == tmp_path / "data"
    monkeypatch.delenv("SDKD_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.default_root() == tmp_path / "xdg" / "sdkd"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache.default_root().parts[-2:] == (".cache", "sdkd")


def test_params_key_is_order_independent_and_value_sensitive():
    assert cache.params_key({"a": 1, "b": 2.0}) == cache.params_key({"b": 2.0, "a": 1})
    assert cache.params_key({"a": 1, "b": 2.0}) != cache.params_key({"a": 1, "b": 2.5})


def test_atomic_path_publishes_only_on_success(tmp_path):
    target = tmp_path / "sub" / "x.txt"
    with cache.atomic_path(target) as tmp:
        tmp.write_text("new")
        assert not target.exists()  # not visible while being written
    assert target.read_text() == "new"
    with pytest.raises(RuntimeError), cache.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "new"
    assert _leftovers(target.parent) == []


def test_json_round_trip_and_bad_files(tmp_path):
    cache.write_json_atomic(tmp_path / "m.json", {"a": [1, 2]})
    assert cache.read_json(tmp_path / "m.json") == {"a": [1, 2]}
    (tmp_path / "bad.json").write_text("{not json")
    assert cache.read_json(tmp_path / "bad.json") is None
    assert cache.read_json(tmp_path / "missing.json") is None


def test_npy_is_complete_detects_truncation_and_mismatch(tmp_path):
    path = tmp_path / "a.npy"
    np.save(path, np.arange(24, dtype=np.float32).reshape(2, 3, 4))
    assert cache.npy_is_complete(path, (2, 3, 4), np.float32)
    assert not cache.npy_is_complete(path, (2, 3, 5), np.float32)
    assert not cache.npy_is_complete(path, (2, 3, 4), np.float64)
    data = path.read_bytes()
    path.write_bytes(data[:-4])
    assert not cache.npy_is_complete(path)
    path.write_bytes(b"garbage")
    assert not cache.npy_is_complete(path)
    assert not cache.npy_is_complete(tmp_path / "missing.npy")


def test_metadata_matches():
    meta = {"params": {"n": 2, "visc": 1e-3}, "sdkd_version": "1", "extra": "ignored"}
    assert cache.metadata_matches(meta, {"params": {"visc": 1e-3, "n": 2}, "sdkd_version": "1"})
    assert not cache.metadata_matches(meta, {"params": {"n": 3, "visc": 1e-3}})
    assert not cache.metadata_matches(meta, {"seed": 0})
    assert not cache.metadata_matches(None, {})


# ------------------------------------------------------------------------------------------------------- cached_array
class Filler:
    def __init__(self, fail: bool = False):
        self.calls, self.fail = 0, fail

    def __call__(self, out):
        self.calls += 1
        out[:1] = 1.0
        if self.fail:
            raise KeyboardInterrupt  # e.g. Ctrl-C half way
        out[1:] = 2.0
        return {"note": "filled"}


def test_cached_array_reuses_only_complete_matching_entries(tmp_path):
    stem, shape = tmp_path / "entry", (4, 3)
    fill = Filler()
    arr, path, reused = cache.cached_array(stem, {"v": 1}, shape, np.float32, fill)
    assert (fill.calls, reused) == (1, False)
    assert isinstance(arr, np.memmap) and not arr.flags.writeable
    np.testing.assert_array_equal(arr, np.array([[1.0] * 3] + [[2.0] * 3] * 3, dtype=np.float32))
    meta = json.loads(stem.with_suffix(".json").read_text())
    assert meta["v"] == 1 and meta["note"] == "filled" and meta["shape"] == [4, 3]

    _, _, reused = cache.cached_array(stem, {"v": 1}, shape, np.float32, fill)
    assert (fill.calls, reused) == (1, True)
    cache.cached_array(stem, {"v": 2}, shape, np.float32, fill)  # different parameters
    assert fill.calls == 2
    cache.cached_array(stem, {"v": 2}, shape, np.float32, fill, force=True)
    assert fill.calls == 3

    path.write_bytes(path.read_bytes()[:-8])  # truncated data with valid metadata
    _, _, reused = cache.cached_array(stem, {"v": 2}, shape, np.float32, fill)
    assert (fill.calls, reused) == (4, False)
    stem.with_suffix(".json").unlink()  # data without metadata
    _, _, reused = cache.cached_array(stem, {"v": 2}, shape, np.float32, fill)
    assert (fill.calls, reused) == (5, False)


def test_interrupted_generation_leaves_nothing_reusable(tmp_path):
    stem = tmp_path / "entry"
    with pytest.raises(KeyboardInterrupt):
        cache.cached_array(stem, {"v": 1}, (4, 3), np.float32, Filler(fail=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    fill = Filler()
    _, _, reused = cache.cached_array(stem, {"v": 1}, (4, 3), np.float32, fill)
    assert (fill.calls, reused) == (1, False)

    # An interrupted regeneration keeps no metadata that could vouch for the old file.
    with pytest.raises(KeyboardInterrupt):
        cache.cached_array(stem, {"v": 2}, (4, 3), np.float32, Filler(fail=True))
    assert not stem.with_suffix(".json").exists() and _leftovers(tmp_path) == []


_WRITER = """
import sys, time
import numpy as np
from sdkd.data import cache

def fill(out):
    out[:] = 7.0
    out.flush()
    print("filling", flush=True)
    time.sleep(120)

cache.cached_array(sys.argv[1], {"v": 1}, (64, 32), np.float32, fill)
"""


def _start_writer(stem):
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(stem)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "filling"
    return proc


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_temp_left_by_sigterm_is_removed_by_a_later_run_but_never_a_live_writers(tmp_path):
    stem = tmp_path / "entry"
    writer = _start_writer(stem)
    try:
        live = _leftovers(tmp_path)
        assert len(live) == 1 and str(writer.pid) in live[0]
        # A concurrent run (another DDP rank) must not take the live writer's file away: it waits on the
        # entry's lock (and says so) instead of writing a second copy.
        assert cache.remove_stale_temps(stem.with_suffix(".npy")) == []
        other = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(stem)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert "waiting for it" in other.stderr.readline()
        other.terminate()
        other.wait(timeout=60)
        assert _leftovers(tmp_path) == live
    finally:
        writer.terminate()  # SIGTERM: the writer dies without running its cleanup
        writer.wait(timeout=60)
    assert len(_leftovers(tmp_path)) == 1  # the bug's starting point: a hidden temporary left behind
    fill = Filler()
    arr, _, reused = cache.cached_array(stem, {"v": 1}, (4, 3), np.float32, fill)
    assert (fill.calls, reused) == (1, False) and _leftovers(tmp_path) == []
    assert arr[0].tolist() == [1.0] * 3 and arr[1:].min() == 2.0


def test_remove_stale_temps_only_removes_dead_local_writers(tmp_path, dead_pid):
    host = cache._HOST
    names = {
        f".x.npy.tmp-{host}-{dead_pid}-ab_c1": True,  # this host, writer gone
        f".x.npy.tmp-{host}-{os.getpid()}-ab_c2": False,  # this host, writer alive (this process)
        f".x.npy.tmp-otherhost-{dead_pid}-ab_c3": False,  # another host sharing the folder: cannot tell
        f".y.npy.tmp-{host}-{dead_pid}-ab_c4": False,  # another entry
        ".x.npy.tmp-legacy01": False,  # old naming, recent: maybe still being written
        ".x.npy.tmp-legacy02": True,  # old naming, untouched for two days
    }
    for name in names:
        (tmp_path / name).write_bytes(b"partial")
    old = time.time() - 2 * 86400
    os.utime(tmp_path / ".x.npy.tmp-legacy02", (old, old))
    if os.name == "nt":  # liveness cannot be probed there: pid-named temporaries are kept
        names[f".x.npy.tmp-{host}-{dead_pid}-ab_c1"] = False
    removed = cache.remove_stale_temps(tmp_path / "x.npy")
    assert sorted(p.name for p in removed) == sorted(n for n, stale in names.items() if stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(n for n, stale in names.items() if not stale)


# ----------------------------------------------------------------------------------------------- NS load_or_generate
def test_load_or_generate_caches_and_matches_generate(tmp_path, monkeypatch):
    arr, path = ns.load_or_generate(**TINY, root=tmp_path, progress=False, device="cpu")
    assert arr.shape == (3, 2, 8, 8) and arr.dtype == np.float32 and isinstance(arr, np.memmap)
    assert path.parent == tmp_path / "navier_stokes" and path.suffix == ".npy"
    expected = ns.generate(TINY["n"], **{k: v for k, v in TINY.items() if k != "n"}, device="cpu")
    np.testing.assert_allclose(arr, expected.numpy(), rtol=0, atol=1e-6)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["params"]["visc"] == 1e-2 and meta["params"]["seed"] == 0
    assert meta["sdkd_version"] == sdkd.__version__ and meta["shape"] == [3, 2, 8, 8]

    def boom(*a, **k):
        raise AssertionError("regenerated although the cache matches")

    monkeypatch.setattr(ns, "iter_generate", boom)
    again, path2 = ns.load_or_generate(**TINY, root=tmp_path, progress=False)
    assert path2 == path
    np.testing.assert_array_equal(again, arr)
    monkeypatch.undo()

    _, path3 = ns.load_or_generate(**TINY, seed=1, root=tmp_path, progress=False, device="cpu")
    assert path3 != path  # other parameters, other entry; both kept

    monkeypatch.setattr(sdkd, "__version__", "999.0")
    calls = []
    real = ns.iter_generate
    monkeypatch.setattr(ns, "iter_generate", lambda *a, **k: calls.append(1) or real(*a, **k))
    ns.load_or_generate(**TINY, root=tmp_path, progress=False, device="cpu")
    assert calls == [1]  # a new sdkd version regenerates


def test_load_or_generate_presets_and_env_root(tmp_path, monkeypatch):
    monkeypatch.setenv("SDKD_DATA_DIR", str(tmp_path))
    params = ns.cache_params("fno", n=2)
    assert params["n"] == 2 and params["resolution"] == 64 and params["visc"] == 1e-5
    arr, path = ns.load_or_generate(
        preset="small", n=2, resolution=8, t_final=0.1, record_steps=1, progress=False, device="cpu"
    )
    assert arr.shape == (2, 1, 8, 8) and path.is_relative_to(tmp_path)
    assert json.loads(path.with_suffix(".json").read_text())["params"]["visc"] == ns.PRESETS["small"]["visc"]


@pytest.mark.parametrize(
    "kwargs,exc,name",
    [
        ({"preset": "huge"}, ValueError, "preset"),
        ({"n": 0}, ValueError, "n"),
        ({"resolution": 0}, ValueError, "resolution"),
        ({"visc": -1.0}, ValueError, "visc"),
        ({"forcing": "kolmogorov"}, ValueError, "forcing"),
        ({"solver_resolution": 12}, ValueError, "solver_resolution"),
    ],
)
def test_load_or_generate_rejects_bad_input(tmp_path, kwargs, exc, name):
    with pytest.raises(exc, match=name):
        ns.load_or_generate(**{**TINY, **kwargs}, root=tmp_path, progress=False)


# ---------------------------------------------------------------------------------------------------------------- CLI
def test_cli_data_ns_generates_then_reuses(tmp_path, capsys):
    argv = ["data", "ns", "--n", "2", "--resolution", "8", "--visc", "1e-2", "--t-final", "0.2"]
    argv += ["--record-steps", "2", "--out", str(tmp_path), "--no-progress", "--device", "cpu"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "generated" in first and "(2, 2, 8, 8)" in first
    assert main(argv) == 0
    assert "reused cache" in capsys.readouterr().out
    (npy,) = (tmp_path / "navier_stokes").glob("*.npy")
    assert main(["data", "inspect", str(npy)]) == 0
    out = capsys.readouterr().out
    assert '"visc": 0.01' in out and "shape=(2, 2, 8, 8)" in out
    with pytest.raises(SystemExit):
        main(["data", "ns", "--n", "0", "--out", str(tmp_path)])
    assert "n must be positive" in capsys.readouterr().err
