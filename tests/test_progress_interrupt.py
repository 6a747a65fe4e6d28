"""Progress display and Ctrl-C of the training commands: bars only on a terminal, the stage/ETA line,
and one line (where, what is saved, how to resume) with exit status 130 instead of a traceback."""

import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from sdkd.train.checkpoint import load_checkpoint
from sdkd.train.interrupt import Interrupted, interrupt_line, stopped_in
from sdkd.train.loop import Trainer
from sdkd.train.progress import StageProgress, format_duration, progress_enabled

ROOT = Path(__file__).resolve().parents[1]


class _Terminal(io.StringIO):
    """A captured stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def _tiny_set(n: int = 12) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 2, 4, 4, generator=g)
    return TensorDataset(x, 0.5 * x)


def _trainer(tmp_path, **kw) -> Trainer:
    cfg = {"epochs": 3, "lr": 1e-2, "scheduler": "none", "progress": kw.pop("progress", False)}
    return Trainer(nn.Conv2d(2, 2, 1), _tiny_set(), _tiny_set(4), cfg, tmp_path / "run", batch_size=4,
                   device="cpu", log=lambda _m: None, **kw)  # fmt: skip


# ----------------------------------------------------------------------------- progress
def test_bars_only_when_enabled_on_rank_zero_and_stderr_is_a_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not progress_enabled(True)  # a pipe or a log file: no bar redraws
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert progress_enabled(True)
    assert not progress_enabled(False)  # train.progress: false
    assert not progress_enabled(True, is_main=False)  # other ranks


def test_fit_loop_and_teacher_cache_draw_bars_on_a_terminal(tmp_path, monkeypatch):
    from sdkd.distill import TeacherCache

    err = _Terminal()
    monkeypatch.setattr(sys, "stderr", err)
    _trainer(tmp_path, progress=True).fit()
    assert re.search(r"epoch 3/3: +\d+%.*/3 \[", err.getvalue())  # steps of the last epoch (drawn at least once)
    TeacherCache.build(nn.Conv2d(2, 2, 1), _tiny_set(), batch_size=5, progress=progress_enabled())
    assert re.search(r"teacher cache: +\d+%.*/12 \[.*sample/s", err.getvalue())


def test_stage_progress_line_estimates_this_stage_and_all():
    lines = []
    stages = StageProgress(
        {"teacher": (3, "st_alternet"), "baseline": (2, "unet"), "distilled": (2, "unet")}, lines.append
    )
    stages.start("teacher")
    stages.epoch_done(1, 3, 10.0)
    assert lines[-1] == "stage 1/3 teacher: epoch 1/3, ~0:20 left in this stage; later stages not timed yet"
    stages.start("baseline")
    stages.epoch_done(1, 2, 2.0)  # the distilled stage (same model) borrows 2 s per epoch
    assert lines[-1] == "stage 2/3 baseline: epoch 1/2, ~0:02 left in this stage, ~0:06 in all"
    stages.epoch_done(2, 2, 4.0)
    assert lines[-1] == "stage 2/3 baseline: epoch 2/2, ~0:00 left in this stage, ~0:06 in all"


def test_stage_progress_counts_untimed_later_stages():
    lines = []
    models = {"t1": (2, "st_alternet"), "s": (2, "unet"), "t2": (2, "st_alternet"), "m": (2, "mixer")}
    stages = StageProgress(models, lines.append)
    stages.start("t1")
    stages.epoch_done(1, 2, 61.0)
    assert lines[-1] == "stage 1/4 t1: epoch 1/2, ~1:01 left in this stage, ~3:03 in all + 2 stage(s) not timed yet"
    stages.start("s")
    stages.epoch_done(1, 2, 30.0)  # t2 borrows t1's 61 s per epoch; the mixer has no estimate yet
    assert lines[-1] == "stage 2/4 s: epoch 1/2, ~0:30 left in this stage, ~2:32 in all + 1 stage(s) not timed yet"


@pytest.mark.parametrize("seconds, text", [(0, "0:00"), (0.2, "0:01"), (95, "1:35"), (3725, "1:02:05")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


# ----------------------------------------------------------------------------- Ctrl-C
def test_fit_interrupted_names_epoch_step_and_the_intact_checkpoint(tmp_path):
    calls = []

    def loss_fn(batch, model):
        calls.append(1)
        if len(calls) == 5:  # epoch 2, step 2 of 3
            raise KeyboardInterrupt
        x, y = batch
        loss = nn.functional.mse_loss(model(x), y)
        return {"loss": loss, "logs": {}}

    with pytest.raises(Interrupted) as info:
        _trainer(tmp_path, loss_fn=loss_fn).fit()
    exc = info.value
    assert exc.where == ["epoch 2/3 at step 2/3"] and exc.checkpoint == tmp_path / "run" / "last.pt"
    line = interrupt_line(exc, "train", ["train", "--config", "my run.yaml"])
    assert line == (
        f"interrupted during epoch 2/3 at step 2/3; the last checkpoint {tmp_path / 'run' / 'last.pt'} is intact "
        "and holds epoch 1; resume with: python -m sdkd.cli train --config 'my run.yaml' --resume"
    )


def test_stage_and_phase_labels_and_the_rerun_hint(tmp_path):
    last = tmp_path / "baseline" / "last.pt"
    with pytest.raises(Interrupted) as info, stopped_in("stage 2/3 baseline", last):
        raise Interrupted(["epoch 1/30 at step 2/5"], last)
    line = interrupt_line(info.value, "demo", ["demo", "--budget", "small"])
    assert line == (
        f"interrupted during stage 2/3 baseline, epoch 1/30 at step 2/5; no epoch had finished, so there is no "
        f"checkpoint yet ({last}); continue with the same command (finished stages are reused, an interrupted one "
        "resumes from its last.pt): python -m sdkd.cli demo --budget small"
    )
    with pytest.raises(Interrupted) as info, stopped_in("the data generation"):
        raise KeyboardInterrupt  # a plain Ctrl-C outside the fit loop gets the block's label
    assert info.value.where == ["the data generation"] and info.value.checkpoint is None
    assert interrupt_line(KeyboardInterrupt(), "eval", ["eval"]) == "interrupted"


@pytest.fixture
def series(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "series.npy"
    np.save(path, rng.standard_normal((12, 6, 1, 12, 12)).astype(np.float32))
    return path


@pytest.mark.skipif(os.name != "posix", reason="SIGINT by pid")
def test_sigint_during_training_one_line_exit_130_and_resume(tmp_path, series):
    out = tmp_path / "run"
    args = ["train", f"out_dir={out}", "data.name=array", f"data.path={series}", "data.input_frames=3",
            "data.output_frames=3", "data.batch_size=4", "model.name=unet", "model.cfg.widths=[4,8]",
            "train.epochs=500", "train.scheduler=none", "train.progress=false"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sdkd.cli", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a background shell may ignore SIGINT
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (out / "last.pt").is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    os.kill(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    lines = stderr.splitlines()
    assert "Traceback" not in stderr and len(lines) == 1, stderr
    m = re.fullmatch(
        r"sdkd: interrupted during epoch (\d+)/500 (?:at step \d/3|after its training steps \(validating or "
        r"saving\)); the last checkpoint (.+) is intact and holds epoch (\d+)/500; resume with: (.+)",
        lines[0],
    )
    assert m, stderr
    during, held = int(m.group(1)), int(m.group(3))
    assert m.group(2) == str(out / "last.pt") and held in (during - 1, during)
    assert load_checkpoint(out / "last.pt")["epoch"] + 1 == held  # the file loads and holds what the line says
    resume = shlex.split(m.group(4))
    assert resume == ["python", "-m", "sdkd.cli", *args, "--resume"]
    done = subprocess.run(
        [sys.executable, *resume[1:], f"train.epochs={held + 1}"], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"resumed from {out / 'last.pt'} after epoch {held}" in done.stdout
    assert load_checkpoint(out / "last.pt")["epoch"] + 1 == held + 1
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows][-2:] == [held, held + 1]
