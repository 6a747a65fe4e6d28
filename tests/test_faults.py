"""The reliability audit (issue 17) as permanent tests: no user data lost, damaged files detected, every bad
input or unwritable output a one-line error, and kill -9 / concurrent writers leave nothing wrong behind.

Kept small (tiny arrays, 1-3 epochs of a small U-Net, a few subprocesses) so the file runs in well under a minute.
"""

import csv
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sdkd.cli import console_main
from sdkd.data import cache
from sdkd.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from sdkd.train.run_dir import RESUMABLE_KEYS, RunFolderError, check_resume_config, prepare_run_dir

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
posix_only = pytest.mark.skipif(os.name == "nt", reason="POSIX signals and flock")


# ----------------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """A tiny (N, T, C, H, W) array for the array loader."""
    rng = np.random.default_rng(0)
    arr = rng.standard_normal((16, 6, 1, 8, 8)).astype(np.float32)
    path = tmp_path_factory.mktemp("data") / "series.npy"
    np.save(path, arr)
    return path


def _train_args(series, out, epochs=1, *extra):
    return [
        "train",
        f"out_dir={out}",
        "data.name=array",
        f"data.path={series}",
        "data.input_frames=3",
        "data.output_frames=3",
        "data.batch_size=4",
        "model.cfg.widths=[4, 8]",
        f"train.epochs={epochs}",
        "train.progress=false",
        "train.max_steps_per_epoch=2",
        "--device",
        "cpu",
        *extra,
    ]


@pytest.fixture(scope="module")
def trained(series, tmp_path_factory):
    """A finished 1-epoch run (its folder)."""
    out = tmp_path_factory.mktemp("run") / "run"
    assert console_main(_train_args(series, out)) == 0
    return out


def _one_line_error(capsys, rc, *needles):
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("sdkd: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    return err


def _metrics_rows(folder, killed=False):
    """The epochs in metrics.csv, checked: one header, every row complete, and the same rows as metrics.jsonl
    (after a kill between the two files' writes, jsonl may be one row ahead)."""
    text = (folder / "metrics.csv").read_text()
    assert text.count("epoch,") == 1 and text.splitlines()[0].startswith("epoch,")  # one header
    rows = list(csv.DictReader(text.splitlines()))
    header = text.splitlines()[0].split(",")
    assert all(set(r) == set(header) and None not in r.values() for r in rows)  # every row has every column
    epochs = [int(r["epoch"]) for r in rows]
    jsonl = [json.loads(line)["epoch"] for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, len(epochs) + 1)) and jsonl == list(range(1, len(jsonl) + 1))
    assert len(jsonl) - len(epochs) in ((0, 1) if killed else (0,))
    return epochs


# ---------------------------------------------------------------------------------------- 1. demo/reproduce data loss
def _stage_cfg(out):
    from sdkd.reproduce import stage_configs

    return stage_configs("ns", "smoke", out)["student"]


@pytest.fixture
def fake_run_stage(monkeypatch):
    calls = []
    monkeypatch.setattr("sdkd.train.run.run_stage", lambda cfg, **kw: calls.append((cfg, kw)))
    return calls


def test_changed_settings_move_the_old_run_aside_and_keep_the_users_files(tmp_path, fake_run_stage):
    from sdkd.train.demo import run_or_reuse

    cfg = _stage_cfg(tmp_path)
    stage = Path(cfg["out_dir"])
    stage.mkdir(parents=True)
    (stage / "notes.txt").write_text("mine")
    save_checkpoint(stage / "last.pt", {"config": {**cfg, "seed": 1}})
    (stage / "metrics.csv").write_text("epoch\n1\n")
    logs = []
    run_or_reuse(cfg, {}, "cpu", logs.append)
    assert (stage / "notes.txt").read_text() == "mine"  # the user's file is where it was
    (aside,) = stage.glob("outdated-*")
    assert sorted(p.name for p in aside.iterdir()) == ["last.pt", "metrics.csv"]
    assert load_checkpoint(aside / "last.pt")["config"]["seed"] == 1
    assert not (stage / "last.pt").exists() and "settings changed" in logs[0] and len(fake_run_stage) == 1


def test_a_stage_folder_copied_elsewhere_is_reused_not_moved_aside(tmp_path, fake_run_stage):
    # only the folder's location differs: e.g. one reproduce run's teachers copied into another student's run
    from sdkd.train.demo import run_or_reuse

    cfg = _stage_cfg(tmp_path / "resnet")
    stage = Path(cfg["out_dir"])
    stage.mkdir(parents=True)
    save_checkpoint(stage / "last.pt", {"config": {**cfg, "out_dir": str(tmp_path / "unet" / "student")}})
    logs = []
    run_or_reuse(cfg, {}, "cpu", logs.append)
    assert (stage / "last.pt").is_file() and not list(stage.glob("outdated-*")) and logs == []
    assert fake_run_stage[0][1]["resume"] is True  # continued (a finished run: nothing left to train)


def test_a_rerun_naming_the_same_folder_by_another_path_reuses_the_distilled_stages(
    tmp_path, fake_run_stage, monkeypatch
):
    # the first run used --out /abs/runs/x, the rerun --out runs/x (or the folder was copied whole):
    # the teachers' paths differ as strings but point at the same place relative to the stage
    from sdkd.reproduce import stage_configs
    from sdkd.train.demo import run_or_reuse
    from sdkd.train.run_dir import check_resume_config

    first = stage_configs("ns", "smoke", tmp_path / "runs" / "x")["spectralkd"]
    stage = Path(first["out_dir"])
    stage.mkdir(parents=True)
    save_checkpoint(stage / "last.pt", {"config": first})
    monkeypatch.chdir(tmp_path)
    again = stage_configs("ns", "smoke", Path("runs") / "x")["spectralkd"]
    assert again["distill"]["teachers"] != first["distill"]["teachers"]
    logs = []
    run_or_reuse(again, {}, "cpu", logs.append)
    assert logs == [] and not list(stage.glob("outdated-*"))
    assert "out_dir" in check_resume_config(first, again, stage / "last.pt")  # and resuming it is allowed
    other = stage_configs("ns", "smoke", Path("runs") / "x")["spectralkd"]  # a teacher elsewhere is another run
    other["distill"]["teachers"] = [str(tmp_path / "elsewhere" / "best.pt")]
    with pytest.raises(RunFolderError, match="distill.teachers"):
        check_resume_config(first, other, stage / "last.pt")
    run_or_reuse(other, {}, "cpu", logs.append)
    assert "settings changed" in logs[0] and len(list(stage.glob("outdated-*"))) == 1


def test_a_teacher_stage_ignores_distill_overrides_it_does_not_use(tmp_path, fake_run_stage):
    # `reproduce --set distill.feature_lam=0.1` changes the students, not the teachers: those are reused
    from sdkd.reproduce import stage_configs
    from sdkd.train.demo import run_or_reuse
    from sdkd.train.run_dir import check_resume_config

    first = stage_configs("ns", "smoke", tmp_path)
    again = stage_configs("ns", "smoke", tmp_path, overrides=("distill.feature_lam=0.1",))
    t1 = Path(first["t1"]["out_dir"])
    t1.mkdir(parents=True)
    save_checkpoint(t1 / "last.pt", {"config": first["t1"]})
    logs = []
    run_or_reuse(again["t1"], {}, "cpu", logs.append)
    assert logs == [] and not list(t1.glob("outdated-*"))
    check_resume_config(first["t1"], again["t1"], t1 / "last.pt")  # resuming it is allowed too
    with pytest.raises(RunFolderError, match="distill.feature_lam"):  # a student that uses it is another run
        check_resume_config(first["spectralkd_latent"], again["spectralkd_latent"], t1 / "last.pt")


@pytest.mark.parametrize(
    ("epoch", "bad", "patience", "trains"), [(59, 0, 0, False), (40, 5, 5, False), (40, 2, 5, True), (10, 0, 0, True)]
)
def test_a_finished_stage_is_reused_without_loading_anything(tmp_path, fake_run_stage, epoch, bad, patience, trains):
    # all epochs done (0-based 59 of 60) or stopped early by patience: no data, no teacher cache, no run_stage
    from sdkd.train.demo import run_or_reuse

    cfg = _stage_cfg(tmp_path)
    cfg["train"].update(epochs=60, patience=patience)
    stage = Path(cfg["out_dir"])
    stage.mkdir(parents=True)
    save_checkpoint(stage / "last.pt", {"config": cfg, "epoch": epoch, "bad_epochs": bad})
    (stage / "best.pt").write_bytes(b"weights")
    logs = []
    assert run_or_reuse(cfg, {}, "cpu", logs.append) == stage / "best.pt"
    assert len(fake_run_stage) == int(trains)
    assert ("finished with these settings; reused" in " ".join(logs)) is not trains


def test_unreadable_last_pt_is_reported_and_nothing_is_touched(tmp_path, fake_run_stage):
    from sdkd.train.demo import run_or_reuse

    cfg = _stage_cfg(tmp_path)
    stage = Path(cfg["out_dir"])
    stage.mkdir(parents=True)
    (stage / "last.pt").write_bytes(b"not a checkpoint")
    (stage / "data.npy").write_bytes(b"precious")
    with pytest.raises(RunFolderError, match="leaves it untouched"):
        run_or_reuse(cfg, {}, "cpu", print)
    assert (stage / "last.pt").read_bytes() == b"not a checkpoint" and (stage / "data.npy").read_bytes() == b"precious"
    assert fake_run_stage == []


def test_reproduce_refuses_one_out_dir_for_every_stage(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("x")
    rc = console_main(["reproduce", "ns", "--out", str(tmp_path / "r"), "--set", f"out_dir={mine}"])
    _one_line_error(capsys, rc, "--set out_dir", "--out")
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]


def test_teacher_cache_never_replaces_a_folder_it_did_not_write(tmp_path):
    from torch.utils.data import TensorDataset

    from sdkd.distill import TeacherCache

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "results.csv").write_text("x")
    data = TensorDataset(torch.randn(4, 2, 1, 4, 4), torch.randn(4, 2, 1, 4, 4))
    with pytest.raises(ValueError, match="not a teacher cache"):
        TeacherCache.build(torch.nn.Identity(), data, path=mine, max_memory_bytes=0)
    assert [p.name for p in mine.iterdir()] == ["results.csv"]


# ------------------------------------------------------------------------------------ 2. train into an existing run
def test_prepare_run_dir_refuses_replaces_only_its_files_and_resumes(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("best.pt", "metrics.csv", "mine.txt"):
        (out / name).write_text(name)
    with pytest.raises(RunFolderError, match="--resume.*--overwrite"):
        prepare_run_dir(out)
    with pytest.raises(RunFolderError, match="no last.pt"):
        prepare_run_dir(out, resume=True)  # a fresh start would overwrite best.pt
    with pytest.raises(RunFolderError, match="exclude"):
        prepare_run_dir(out, resume=True, overwrite=True)
    prepare_run_dir(out, overwrite=True)
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        prepare_run_dir(tmp_path / "file")


def test_cli_refuses_an_existing_run_then_resumes_or_overwrites(series, trained, tmp_path, capsys):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(trained, out)
    (out / "mine.txt").write_text("keep")
    best = (out / "best.pt").read_bytes()
    _one_line_error(capsys, console_main(_train_args(series, out)), "already holds a run", "--resume", "--overwrite")
    assert (out / "best.pt").read_bytes() == best  # untouched
    # --resume: lr and seed changed -> refused, naming the keys; more epochs -> continues the same run
    rc = console_main(_train_args(series, out, 2, "train.lr=0.5", "seed=3", "--resume"))
    _one_line_error(capsys, rc, "train.lr", "seed", "cannot resume")
    assert console_main(_train_args(series, out, 2, "--resume")) == 0
    assert _metrics_rows(out) == [1, 2] and load_checkpoint(out / "last.pt")["epoch"] == 1
    # --overwrite: a new run; only sdkd's files were replaced
    assert console_main(_train_args(series, out, 1, "--overwrite")) == 0
    assert _metrics_rows(out) == [1] and (out / "mine.txt").read_text() == "keep"


def test_resume_config_check_allows_only_the_documented_keys():
    old = {"seed": 1, "out_dir": "a", "train": {"epochs": 2, "lr": 1e-3, "scheduler": "none", "patience": 1}}
    new = {**old, "out_dir": "b", "train": {**old["train"], "epochs": 5, "patience": 3}}
    assert check_resume_config(old, new, "x") == ["out_dir", "train.epochs", "train.patience"]
    assert {"train.epochs", "train.patience", "train.progress"} <= RESUMABLE_KEYS
    with pytest.raises(RunFolderError, match=r"train\.lr: 0\.001 -> 0\.01"):
        check_resume_config(old, {**old, "train": {**old["train"], "lr": 1e-2}}, "x")
    newer = {**old, "train": {**old["train"], "deterministic": True}}  # a key (at its default) old sdkd lacked
    assert check_resume_config(old, newer, "x") == ["train.deterministic"]
    with pytest.raises(RunFolderError, match="train.deterministic"):
        check_resume_config(old, {**old, "train": {**old["train"], "deterministic": False}}, "x")
    cyc = {**old, "train": {**old["train"], "scheduler": "onecycle"}}
    with pytest.raises(RunFolderError, match="onecycle"):
        check_resume_config(cyc, {**cyc, "train": {**cyc["train"], "epochs": 9}}, "x")


# ----------------------------------------------------------------------------------------- 7. digests: checkpoints
@pytest.fixture
def marked_checkpoint(tmp_path):
    """A checkpoint holding a tensor whose bytes can be found in the file."""
    t = torch.arange(4096, dtype=torch.float32) * 1.2345
    path = save_checkpoint(tmp_path / "ck.pt", {"model": {"w": t}, "config": {"seed": 1}})
    raw = path.read_bytes()
    return path, raw, raw.index(t.numpy().tobytes())


@pytest.mark.parametrize("damage", ["bit_flip", "zeroed_1k", "truncated"])
def test_damaged_checkpoint_is_an_error_not_different_numbers(marked_checkpoint, damage):
    path, raw, at = marked_checkpoint
    data = bytearray(raw)
    if damage == "bit_flip":
        data[at + 1001] ^= 0x04
    elif damage == "zeroed_1k":
        data[at + 2048 : at + 3072] = bytes(1024)
    else:
        data = data[: len(data) // 2]
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)


def test_damaged_checkpoint_is_one_line_in_predict(trained, tmp_path, capsys):
    ck = tmp_path / "best.pt"
    raw = bytearray((trained / "best.pt").read_bytes())
    w = load_checkpoint(trained / "best.pt")["model"]
    big = max(w.values(), key=lambda v: v.numel())
    at = bytes(raw).index(big.numpy().tobytes())
    raw[at + 8] ^= 0x10
    ck.write_bytes(bytes(raw))
    np.save(tmp_path / "x.npy", np.zeros((3, 1, 8, 8), np.float32))
    argv = ["predict", "--checkpoint", str(ck), "--input", str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npy")]
    _one_line_error(capsys, console_main(argv), "digest", str(ck))
    assert not (tmp_path / "y.npy").exists()


# ------------------------------------------------------------------------------------------ 7. digests: data cache
class Filler:
    def __init__(self):
        self.calls = 0

    def __call__(self, out):
        self.calls += 1
        out[:] = np.arange(out.size, dtype=out.dtype).reshape(out.shape) % 251 + 1


@pytest.mark.parametrize("damage", ["bit_flip", "zeroed_1MiB"])
def test_damaged_cache_entry_is_regenerated_not_reused(tmp_path, damage, capsys):
    stem, shape = tmp_path / "entry", (320, 1024)  # 1.25 MiB
    fill = Filler()
    first, path, _ = cache.cached_array(stem, {"v": 1}, shape, np.float32, fill)
    expected = np.array(first)
    del first
    data = bytearray(path.read_bytes())
    if damage == "bit_flip":
        data[len(data) // 2] ^= 0x01
    else:
        data[200_000 : 200_000 + (1 << 20)] = bytes(1 << 20)
    path.write_bytes(bytes(data))
    assert console_main(["data", "inspect", str(path)]) == 0
    assert "sha256: MISMATCH" in capsys.readouterr().out
    with pytest.warns(RuntimeWarning, match="do not match the digest"):
        again, _, reused = cache.cached_array(stem, {"v": 1}, shape, np.float32, fill)
    assert (reused, fill.calls) == (False, 2) and np.array_equal(again, expected)
    assert cache.cached_array(stem, {"v": 1}, shape, np.float32, fill)[2]  # the repaired entry is reused


def test_damaged_teacher_cache_file_is_rebuilt_not_reused(tmp_path):
    from torch.utils.data import TensorDataset

    from sdkd.distill import TeacherCache
    from sdkd.distill.cache import CacheDamagedError

    data = TensorDataset(torch.randn(8, 2, 1, 4, 4), torch.randn(8, 2, 1, 4, 4))
    teacher = torch.nn.Conv3d(2, 2, 1)
    first = TeacherCache.build(teacher, data, path=tmp_path / "tc", max_memory_bytes=0)
    expected = first[:][0]["pred"].clone()
    del first
    (npy,) = (tmp_path / "tc").glob("*.npy")
    raw = bytearray(npy.read_bytes())
    raw[-5] ^= 0x20
    npy.write_bytes(bytes(raw))
    with pytest.raises(CacheDamagedError, match="digest"):
        TeacherCache.open(tmp_path / "tc")
    with pytest.warns(RuntimeWarning, match="rebuilding"):
        again = TeacherCache.build(teacher, data, path=tmp_path / "tc", max_memory_bytes=0)
    assert torch.equal(again[:][0]["pred"], expected)


# ----------------------------------------------------------------------------- malicious checkpoints: no code runs
class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_checkpoint_runs_no_code_on_any_loading_path(series, trained, tmp_path, capsys, monkeypatch):
    from sdkd.data._io import open_array
    from sdkd.export import export_checkpoint
    from sdkd.forecast import Forecaster
    from sdkd.train.demo import run_or_reuse
    from sdkd.train.run import load_model

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "sdkd-checkpoint", "version": 2, "model": _Evil(marker)}, evil)
    with open(tmp_path / "evil.pkl", "wb") as fh:  # and the same as a bare pickle stream
        pickle.dump(_Evil(marker), fh)
    np.save(tmp_path / "x.npy", np.zeros((3, 1, 8, 8), np.float32))
    api = [
        lambda: load_checkpoint(evil),
        lambda: load_model(evil),
        lambda: Forecaster.from_checkpoint(evil),
        lambda: export_checkpoint(evil, tmp_path / "m.pt2", "torch-export"),
        lambda: load_checkpoint(tmp_path / "evil.pkl"),
    ]
    for call in api:
        with pytest.raises(CheckpointError):
            call()
    with pytest.raises(ValueError):
        open_array(evil, None, "data")  # a .pt data file
    # resume, demo/reproduce reuse, distill's teachers, eval, predict, export: all through the CLI or API
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(evil.read_bytes())
    with pytest.raises(CheckpointError, match="pickled"):
        _resume(series, run)
    monkeypatch.setattr("sdkd.train.run.run_stage", lambda cfg, **kw: None)
    cfg = _stage_cfg(tmp_path / "r")
    Path(cfg["out_dir"]).mkdir(parents=True)
    (Path(cfg["out_dir"]) / "last.pt").write_bytes(evil.read_bytes())
    with pytest.raises(RunFolderError, match="pickled"):
        run_or_reuse(cfg, {}, "cpu", print)
    monkeypatch.undo()
    for argv in (
        ["distill", "--teacher", str(evil), *_train_args(series, tmp_path / "d")[1:]],
        ["eval", "--checkpoint", str(evil)],
        ["predict", "--checkpoint", str(evil), "--input", str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npy")],
        ["export", "--checkpoint", str(evil), "--out", str(tmp_path / "m.onnx")],
    ):
        _one_line_error(capsys, console_main(argv), "pickled")
    assert not marker.exists()


def _resume(series, run):
    from sdkd.train import build_config
    from sdkd.train.run import run_stage

    cfg = build_config(overrides=[a for a in _train_args(series, run)[1:] if "=" in a])
    run_stage(cfg, resume=True, device="cpu", log=lambda _m: None)


# ------------------------------------------------------------------------------------------ 9. one-line errors
def test_bad_inputs_and_outputs_are_one_line(series, trained, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: [1e-3\n")
    _one_line_error(capsys, console_main(["train", "--config", str(bad)]), "not valid YAML", str(bad))
    _one_line_error(capsys, console_main(["train", "train.lr=[1"]), "not valid YAML")
    (tmp_path / "afile").write_text("")
    rc = console_main(_train_args(series, tmp_path / "afile"))
    _one_line_error(capsys, rc, "is a file, not a folder")
    np.save(tmp_path / "x.npy", np.zeros((3, 1, 8, 8), np.float32))
    (tmp_path / "outdir.npy").mkdir()
    argv = ["predict", "--checkpoint", str(trained / "best.pt"), "--input", str(tmp_path / "x.npy")]
    _one_line_error(capsys, console_main([*argv, "--out", str(tmp_path / "outdir.npy")]), "is a folder")
    _one_line_error(capsys, console_main([*argv, "--out", str(tmp_path / "x.npy" / "y.npy")]), "is a file")


def test_predict_and_export_never_replace_an_existing_file_unasked(trained, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((3, 1, 8, 8), np.float32))
    mine = tmp_path / "mine.npy"
    mine.write_bytes(b"the user's own file")
    argv = ["predict", "--checkpoint", str(trained / "best.pt"), "--input", str(tmp_path / "x.npy"), "--out", str(mine)]
    _one_line_error(capsys, console_main(argv), "already exists", "--overwrite")
    assert mine.read_bytes() == b"the user's own file"
    assert console_main([*argv, "--overwrite"]) == 0 and np.load(mine).shape[-2:] == (8, 8)
    capsys.readouterr()
    onnx = tmp_path / "student.pt2"
    onnx.write_bytes(b"kept")
    argv = ["export", "--checkpoint", str(trained / "best.pt"), "--format", "torch-export", "--out", str(onnx)]
    _one_line_error(capsys, console_main(argv), "already exists", "--overwrite")
    assert onnx.read_bytes() == b"kept"


def test_diverging_run_is_one_line_and_keeps_no_nan_checkpoint(series, tmp_path, capsys):
    out = tmp_path / "run"
    rc = console_main(_train_args(series, out, 2, "train.lr=1e6", "train.clip_grad=0"))
    err = _one_line_error(capsys, rc, "diverged", "train.lr")
    bad_epoch = int(re.search(r"epoch (\d+)", err).group(1))
    for name in ("last.pt", "best.pt"):  # the diverged epoch was not saved
        if (out / name).exists():
            ck = load_checkpoint(out / name)
            assert ck["epoch"] + 1 < bad_epoch and all(torch.isfinite(v).all() for v in ck["model"].values())


@pytest.fixture
def read_only(monkeypatch, tmp_path):
    """A folder that cannot be written (simulated: this suite may run as root, who can write anywhere)."""
    import tempfile

    folder = tmp_path / "ro"
    folder.mkdir()
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kw):
        if dir is not None and Path(dir).resolve().is_relative_to(folder.resolve()):
            raise PermissionError(13, "Permission denied", str(dir))
        return real(*args, dir=dir, **kw)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    return folder


def test_read_only_outputs_fail_before_the_work(series, trained, tmp_path, capsys, read_only):
    np.save(tmp_path / "x.npy", np.zeros((3, 1, 8, 8), np.float32))
    ck = str(trained / "best.pt")
    for argv in (
        _train_args(series, read_only / "run"),
        ["eval", "--checkpoint", ck, "--out", str(read_only)],
        ["predict", "--checkpoint", ck, "--input", str(tmp_path / "x.npy"), "--out", str(read_only / "y.npy")],
        ["export", "--checkpoint", ck, "--format", "torch-export", "--out", str(read_only / "m.pt2")],
        ["data", "ns", "--n", "2", "--resolution", "16", "--record-steps", "2", "--out", str(read_only)],
    ):
        err = _one_line_error(capsys, console_main(argv), "not writable", str(read_only))
        assert "operator" not in err
    assert not list(read_only.rglob("*.pt")) and not list(read_only.rglob("*.npy"))


@pytest.mark.skipif(os.name == "nt" or os.geteuid() == 0, reason="needs POSIX permissions that apply (not root)")
def test_chmod_read_only_run_folder_is_one_line(series, tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        _one_line_error(capsys, console_main(_train_args(series, folder)), "not writable")
    finally:
        folder.chmod(0o755)


def test_other_exceptions_keep_their_traceback(monkeypatch):
    def bug(*_a, **_k):
        raise RuntimeError("an sdkd bug")

    monkeypatch.setattr("sdkd.train.run.run_stage", bug)
    with pytest.raises(RuntimeError, match="an sdkd bug"):
        console_main(["train", "train.epochs=1"])


def test_implicit_value_type_key_errors_are_bugs_with_a_traceback(monkeypatch):
    """A KeyError from a dict lookup or a TypeError from a wrong call inside sdkd is a bug, not a user's mistake:
    only ``raise`` statements of sdkd's own argument checks become one line."""
    for exc_type, body in ((KeyError, lambda: {}["missing"]), (TypeError, lambda: len(3))):

        def bug(*_a, _body=body, **_k):
            return _body()

        monkeypatch.setattr("sdkd.train.run.run_stage", bug)
        with pytest.raises(exc_type):
            console_main(["train", "train.epochs=1"])


def test_a_deliberate_argument_check_in_sdkd_is_one_line(capsys):
    from sdkd.cli import _user_error
    from sdkd.models import build_model

    with pytest.raises(ValueError) as info:
        build_model("unet", in_shape=(1, 16, 16), out_frames=1)
    assert _user_error(info.value) == str(info.value)
    with pytest.raises(ValueError) as info:  # raised inside torch: not sdkd's check
        import torch

        torch.nn.functional.mse_loss(torch.zeros(2), torch.zeros(2), reduction="bogus")
    assert _user_error(info.value) is None


# ---------------------------------------------------------------------------------- kill -9 and concurrent writers
def _kill9(proc):
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def _wait_for(pred, timeout=120.0):
    t0 = time.monotonic()
    while not pred():
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.05)


@posix_only
def test_kill9_during_training_then_resume(series, tmp_path):
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "sdkd.cli", *_train_args(series, out, 500)]
    proc = subprocess.Popen(argv, env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(
            lambda: (out / "metrics.jsonl").is_file() and len((out / "metrics.jsonl").read_text().splitlines()) >= 2
        )
    finally:
        _kill9(proc)
    ck = load_checkpoint(out / "last.pt")  # whole and verified, whatever the moment of the kill
    done = ck["epoch"] + 1
    rows = _metrics_rows(out, killed=True)
    assert len(rows) in (done - 1, done)  # the metrics files are written right after last.pt
    assert console_main(_train_args(series, out, done + 1, "--resume")) == 0
    assert _metrics_rows(out) == list(range(1, done + 2))
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]


_SAVER = """
import sys, torch
from sdkd.train.checkpoint import save_checkpoint
w = torch.randn(1 << 22)
for i in range(10000):
    save_checkpoint(sys.argv[1], {"model": {"w": w + i}, "i": i})
    print(i, flush=True)
"""


@posix_only
def test_kill9_during_checkpoint_write_leaves_the_last_whole_one(tmp_path):
    path = tmp_path / "last.pt"
    proc = subprocess.Popen(
        [sys.executable, "-c", _SAVER, str(path)], env=ENV, cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        proc.stdout.readline()
        proc.stdout.readline()
        time.sleep(0.15)  # most likely inside a write of the 16 MiB tensor
    finally:
        _kill9(proc)
    ck = load_checkpoint(path)
    assert ck["i"] >= 1 and ck["model"]["w"].shape == (1 << 22,)  # a whole checkpoint, its digest verified
    save_checkpoint(path, {"i": -1})  # the next write removes what the killed writer left
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


_WRITER = """
import sys, time
import numpy as np
from sdkd.data import cache

def fill(out):
    with open(sys.argv[2], "a") as fh:
        fh.write("fill\\n")
    print("filling", flush=True)
    time.sleep(float(sys.argv[3]))
    out[:] = 7.0

arr, _, reused = cache.cached_array(sys.argv[1], {"v": 1}, (64, 32), np.float32, fill)
print("reused" if reused else "built", float(arr.sum()), flush=True)
"""


def _writer(stem, log, sleep):
    cmd = [sys.executable, "-c", _WRITER, str(stem), str(log), str(sleep)]
    return subprocess.Popen(cmd, env=ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@posix_only
def test_kill9_during_data_generation_leaves_nothing_reusable(tmp_path):
    stem, log = tmp_path / "entry", tmp_path / "fills"
    proc = _writer(stem, log, 120)
    try:
        assert proc.stdout.readline().strip() == "filling"
    finally:
        _kill9(proc)
    fill = Filler()
    arr, _, reused = cache.cached_array(stem, {"v": 1}, (64, 32), np.float32, fill)  # no wait: the lock died with it
    assert (reused, fill.calls) == (False, 1) and arr[0, 0] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry.json", "entry.npy", "fills"]


@posix_only
def test_concurrent_builders_of_one_cache_entry_build_it_once(tmp_path):
    stem, log = tmp_path / "entry", tmp_path / "fills"
    first = _writer(stem, log, 1.0)
    assert first.stdout.readline().strip() == "filling"
    second = _writer(stem, log, 1.0)
    assert "waiting" in second.stderr.readline()  # it says why nothing happens
    outs = [p.communicate(timeout=120)[0].split() for p in (first, second)]
    assert outs == [["built", str(7.0 * 64 * 32)], ["reused", str(7.0 * 64 * 32)]]
    assert log.read_text() == "fill\n"  # the work was done once
