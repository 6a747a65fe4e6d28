"""Metric loggers: TensorBoard event files read back, the plug-in interface, and the config switch."""

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from sdkd.train import ConfigError, Trainer, build_config
from sdkd.train.loggers import CallbackLogger, MetricLogger, TensorBoardLogger, build_loggers, scalar_metrics

CFG = {"epochs": 3, "lr": 3e-3, "patience": 0, "clip_grad": 0, "progress": False}


def _sets():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(24, 2, 1, 8, 8, generator=g)
    y = 0.5 * x.flip(-1)
    return TensorDataset(x[:16], y[:16]), TensorDataset(x[16:], y[16:])


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x):
        b, t, c, h, w = x.shape
        return self.conv(x.reshape(b, t * c, h, w)).reshape(b, t, c, h, w)


def _fit(tmp_path: Path, loggers) -> list[dict]:
    train, val = _sets()
    trainer = Trainer(Net(), train, val, CFG, tmp_path / "run", batch_size=8, device="cpu", log=lambda m: None,
                      loggers=loggers)  # fmt: skip
    return trainer.fit().history


def _read_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = event_accumulator.EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_event_file_holds_every_epoch_metric(tmp_path):
    pytest.importorskip("tensorboard")
    history = _fit(tmp_path, [TensorBoardLogger(tmp_path / "tb")])
    scalars = _read_scalars(tmp_path / "tb")
    assert {"val_mse", "train_loss", "lr", "seconds"} <= set(scalars) and "epoch" not in scalars
    for tag in ("val_mse", "train_loss"):
        assert [step for step, _ in scalars[tag]] == [1, 2, 3]
        want = [row[tag] for row in history]
        assert [v for _, v in scalars[tag]] == pytest.approx(want, rel=1e-6)  # stored as float32


def test_callback_logger_sees_plain_floats_per_epoch_and_is_closed(tmp_path):
    rows, closed = [], []
    logger = CallbackLogger(lambda m, step: rows.append((step, m)), close=lambda: closed.append(True))
    assert isinstance(logger, MetricLogger)
    history = _fit(tmp_path, [logger])
    assert [step for step, _ in rows] == [1, 2, 3] and closed == [True]
    for (_, m), row in zip(rows, history):
        assert all(type(v) is float for v in m.values()) and "epoch" not in m
        assert m["val_mse"] == row["val_mse"]


def test_scalar_metrics_drops_the_epoch_and_non_numbers():
    assert scalar_metrics({"epoch": 3, "val_mse": 0.5, "n": 2, "flag": True, "name": "x"}) == {"val_mse": 0.5, "n": 2.0}


def test_config_names_loggers_and_a_typo_fails_up_front(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    (logger,) = build_loggers(["tensorboard"], tmp_path)
    assert isinstance(logger, TensorBoardLogger) and logger.log_dir == tmp_path / "tensorboard"
    logger.close()
    with pytest.raises(ValueError, match="unknown logger 'wandb'.*tensorboard"):
        build_loggers(["wandb"], tmp_path)

    from sdkd.train.run import run_stage

    def forbidden(*args, **kwargs):
        raise AssertionError("data was built before the config was checked")

    monkeypatch.setattr("sdkd.train.run.build_datasets", forbidden)
    with pytest.raises(
        ConfigError, match=r"train.loggers: got \['tensorbord'\]; expected a list of names from tensorboard"
    ):
        build_config([], [f"out_dir={tmp_path}", "train.loggers=[tensorbord]"])
    cfg = build_config([], [f"out_dir={tmp_path}"])
    cfg["train"]["loggers"] = "tensorboard"  # a config built by hand: a string, not a list
    with pytest.raises(ConfigError, match="train.loggers: got 'tensorboard'; expected a list of names"):
        run_stage(cfg, device="cpu")
