"""Training engine: configs, checkpoints (atomic, safe, resumable) and DDP equivalence."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from sdkd.train import CheckpointError, ConfigError, Trainer, build_config, load_checkpoint, save_checkpoint

HERE = Path(__file__).resolve().parent


def _data(n=40):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 2, 1, 8, 8, generator=g)
    y = 0.5 * torch.roll(x, 1, dims=-1)
    return TensorDataset(x[: n - 8], y[: n - 8]), TensorDataset(x[n - 8 :], y[n - 8 :])


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(2, 8, 3, padding=1), nn.Dropout(0.1), nn.GELU(), nn.Conv2d(8, 2, 3, padding=1)
        )

    def forward(self, x):
        b, t, c, h, w = x.shape
        return self.body(x.reshape(b, t * c, h, w)).reshape(b, t, c, h, w)


CFG = {"epochs": 4, "lr": 3e-3, "patience": 0, "clip_grad": 1.0, "progress": False, "scheduler": "cosine"}


def _trainer(tmp, cfg=CFG, seed=0):
    torch.manual_seed(seed)
    train, val = _data()
    return Trainer(Net(), train, val, cfg, tmp, batch_size=8, device="cpu", log=lambda m: None)


class _NaNInEval(Net):
    """Finite while training, NaN in eval mode: the validation split gets NaN predictions."""

    def forward(self, x):
        y = super().forward(x)
        return y if self.training else y * float("nan")


def test_non_finite_validation_is_an_error_not_a_run_without_best(tmp_path):
    """A NaN validation MSE never counted as an improvement: the run ended rc 0 with no best.pt and NaN rows in
    metrics.jsonl. Now it stops at that epoch and writes nothing of it."""
    train, val = _data()
    cfg = {**CFG, "epochs": 2}
    trainer = Trainer(_NaNInEval(), train, val, cfg, tmp_path, batch_size=8, device="cpu", log=lambda m: None)
    with pytest.raises(FloatingPointError, match=r"non-finite validation MSE after epoch 1"):
        trainer.fit()
    assert not (tmp_path / "best.pt").exists() and not (tmp_path / "metrics.jsonl").exists()


# ---------------------------------------------------------------- config
def test_config_defaults_files_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  name: resnet\ntrain:\n  epochs: 3\n")
    cfg = build_config([f], ["train.lr=3e-4", "data.batch_size=4", "model.cfg.widths=[8, 16]"])
    assert cfg["model"]["name"] == "resnet" and cfg["train"]["epochs"] == 3
    assert cfg["train"]["lr"] == pytest.approx(3e-4) and cfg["data"]["batch_size"] == 4
    assert cfg["model"]["cfg"] == {"widths": [8, 16]} and cfg["seed"] == 42


@pytest.mark.parametrize("override", ["train.lrr=1", "nosection.x=1", "train=3"])
def test_config_unknown_or_malformed_keys_are_errors(override):
    with pytest.raises(ConfigError):
        build_config([], [override])


def test_config_missing_file_and_bad_values(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        build_config([tmp_path / "nope.yaml"])
    with pytest.raises(ConfigError, match="epochs"):
        build_config([], ["train.epochs=0"])
    with pytest.raises(ConfigError, match="teachers"):
        build_config([], ["stage=distill"])


# ---------------------------------------------------------------- checkpoints
def test_checkpoint_roundtrip_is_weights_only(tmp_path):
    p = save_checkpoint(tmp_path / "a.pt", {"model": {"w": torch.ones(2)}, "config": {"x": [1, "a"]}})
    assert [f.name for f in tmp_path.iterdir()] == ["a.pt"]  # no temp file left
    data = torch.load(p, weights_only=True)
    assert data["format"] == "sdkd-checkpoint" and torch.equal(data["model"]["w"], torch.ones(2))
    assert load_checkpoint(p)["config"] == {"x": [1, "a"]}


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_checkpoint_write_removes_a_killed_writers_temp_but_not_a_live_ones(tmp_path, dead_pid):
    import os

    from sdkd.data import cache

    stale = tmp_path / f".a.pt.tmp-{cache._HOST}-{dead_pid}-abc"
    live = tmp_path / f".a.pt.tmp-{cache._HOST}-{os.getpid()}-def"  # this process: alive
    stale.write_bytes(b"half a checkpoint")
    live.write_bytes(b"being written")
    save_checkpoint(tmp_path / "a.pt", {"model": {"w": torch.ones(2)}})
    assert sorted(f.name for f in tmp_path.iterdir()) == sorted(["a.pt", live.name])


def test_checkpoint_with_pickled_object_is_refused(tmp_path):
    p = tmp_path / "evil.pt"
    torch.save({"format": "sdkd-checkpoint", "version": 1, "payload": _Evil()}, p)
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        load_checkpoint(p)


def test_checkpoint_corrupt_missing_and_foreign(tmp_path):
    p = save_checkpoint(tmp_path / "a.pt", {"model": {"w": torch.ones(1000)}})
    raw = p.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / "trunc.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"hello, not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"w": torch.ones(1)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not an sdkd checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")


# ---------------------------------------------------------------- fit / resume
def test_fit_learns_and_writes_best_last_and_metrics(tmp_path):
    res = _trainer(tmp_path).fit()
    vals = [r["val_mse"] for r in res.history]
    assert res.epochs_run == 4 and vals[-1] < vals[0]
    assert res.best_path.is_file() and res.last_path.is_file()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 4
    assert (tmp_path / "metrics.csv").read_text().splitlines()[0].startswith("epoch")
    assert load_checkpoint(res.best_path)["best_val"] == pytest.approx(min(vals))


class _Interrupt(Exception):
    pass


def test_resume_after_interruption_matches_uninterrupted(tmp_path):
    full = _trainer(tmp_path / "full")
    full.fit()
    part = _trainer(tmp_path / "part")
    calls = {"n": 0}
    original = part._train_epoch

    def crash_in_third_epoch(epoch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise _Interrupt
        return original(epoch)

    part._train_epoch = crash_in_third_epoch
    with pytest.raises(_Interrupt):
        part.fit()
    assert load_checkpoint(tmp_path / "part" / "last.pt")["epoch"] == 1  # two epochs done
    torch.manual_seed(123)  # a different process state must not matter
    resumed = _trainer(tmp_path / "part", seed=7)
    res = resumed.fit(resume=True)
    assert res.epochs_run == 4 and len(res.history) == 4
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_resume_with_mismatched_model_is_clear_error(tmp_path):
    _trainer(tmp_path, cfg={**CFG, "epochs": 1}).fit()
    train, val = _data()
    other = Trainer(nn.Conv3d(2, 2, 1), train, val, CFG, tmp_path, batch_size=8, device="cpu", log=lambda m: None)
    with pytest.raises(CheckpointError, match="does not match"):
        other.fit(resume=True)


def test_early_stopping(tmp_path):
    cfg = {**CFG, "epochs": 30, "lr": 1e-9, "patience": 2, "scheduler": "none"}
    res = _trainer(tmp_path, cfg).fit()
    assert res.stopped_early and res.epochs_run < 30


def test_nonfinite_loss_raises(tmp_path):
    t = _trainer(tmp_path)
    t.loss_fn = lambda batch, model: {"loss": model(batch[0]).sum() * float("nan")}
    with pytest.raises(FloatingPointError, match="non-finite"):
        t.fit()


# ---------------------------------------------------------------- DDP
def test_ddp_two_cpu_processes_match_single_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
    single, multi = tmp_path / "single", tmp_path / "ddp"
    single.mkdir()
    multi.mkdir()
    subprocess.run([sys.executable, str(HERE / "_ddp_fit.py"), str(single)], check=True, env=env, timeout=120)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    r = subprocess.run(
        [*cmd, str(HERE / "_ddp_fit.py"), str(multi)], env=env, timeout=180, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-3000:]
    a = torch.load(single / "weights.pt", weights_only=True)
    b = torch.load(multi / "weights.pt", weights_only=True)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
