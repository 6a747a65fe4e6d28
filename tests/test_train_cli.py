"""End to end through the CLI: train a teacher and a student, distill, evaluate (tiny data)."""

import json

import numpy as np
import pytest
import torch

from sdkd.cli import main
from sdkd.train import ConfigError, build_config, load_checkpoint
from sdkd.train.run import build_datasets, load_model


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """A (N, T, C, H, W) array of smooth moving waves: learnable in a few steps."""
    rng = np.random.default_rng(0)
    n, t, h, w = 40, 6, 12, 12
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    k = rng.integers(1, 3, size=(n, 2))
    phase = rng.uniform(0, 2 * np.pi, size=n)
    frames = [
        np.sin(2 * np.pi * (k[i, 0] * yy + k[i, 1] * (xx - s)) / h + phase[i]) for i in range(n) for s in range(t)
    ]
    arr = np.stack(frames).reshape(n, t, 1, h, w).astype(np.float32) * 3.0 + 1.0
    path = tmp_path_factory.mktemp("data") / "waves.npy"
    np.save(path, arr)
    return path


def _args(series, out, model, epochs=2):
    return [
        f"out_dir={out}",
        "data.name=array",
        f"data.path={series}",
        "data.input_frames=3",
        "data.output_frames=3",
        "data.batch_size=4",
        f"model.name={model}",
        f"train.epochs={epochs}",
        "train.lr=3e-3",
        "train.progress=false",
    ]


def test_train_distill_eval_roundtrip(series, tmp_path, capsys):
    t_out, s_out = tmp_path / "teacher", tmp_path / "student"
    small_teacher = ["model.cfg.hid_S=8", "model.cfg.hid_T=16", "model.cfg.N_T=1", "model.cfg.num_heads=2"]
    assert main(["train", *_args(series, t_out, "st_alternet"), *small_teacher]) == 0
    ck = load_checkpoint(t_out / "best.pt")
    assert ck["model_spec"]["name"] == "st_alternet" and ck["model_spec"]["in_shape"] == [3, 1, 12, 12]
    assert set(ck["normalization"]) == {"mean", "std"} and ck["config"]["stage"] == "train"

    kd = ["distill.kd.weighting=adaptive", "distill.lam=0.5"]
    assert main(["distill", "--teacher", str(t_out / "best.pt"), *_args(series, s_out, "unet"), *kd]) == 0
    ck = load_checkpoint(s_out / "best.pt")
    assert ck["config"]["stage"] == "distill" and ck["config"]["distill"]["teachers"] == [str(t_out / "best.pt")]
    rows = [json.loads(line) for line in (s_out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and {"train_loss", "val_mse"} <= set(rows[0])
    assert any(k.startswith("train_kd") or k.startswith("train_task") for k in rows[0])

    out = tmp_path / "eval"
    argv = ["eval", "--checkpoint", str(t_out / "best.pt"), "--checkpoint", str(s_out / "best.pt")]
    assert main([*argv, "--name", "teacher", "--name", "student", "--out", str(out), "--figures"]) == 0
    table = capsys.readouterr().out
    assert "| teacher |" in table and "| student |" in table
    res = json.loads((out / "results.json").read_text())
    model, _ = load_model(s_out / "best.pt")
    test = build_datasets(load_checkpoint(s_out / "best.pt")["config"]["data"])["test"]
    x = torch.stack([test[i][0] for i in range(len(test))])
    y = torch.stack([test[i][1] for i in range(len(test))])
    with torch.no_grad():
        assert res["student"]["mse"] == pytest.approx(torch.mean((model(x) - y) ** 2).item(), rel=1e-4)
    assert (out / "frames.png").is_file() and (out / "spectra.png").is_file()


def test_distill_with_wrong_teacher_shape_is_clear(series, tmp_path):
    t_out = tmp_path / "teacher"
    assert main(["train", *_args(series, t_out, "unet", epochs=1)]) == 0
    args = _args(series, tmp_path / "s", "unet", epochs=1)
    args = [a.replace("data.output_frames=3", "data.output_frames=2") for a in args]
    with pytest.raises(ConfigError, match="teacher"):
        main(["distill", "--teacher", str(t_out / "best.pt"), *args])


def test_cli_rejects_unknown_keys_and_bad_model_cfg(series, tmp_path):
    with pytest.raises(ConfigError, match="unknown config key"):
        build_config([], ["train.epoch=3"])
    with pytest.raises(ConfigError, match="model.cfg"):
        main(["train", *_args(series, tmp_path, "unet", epochs=1), "model.cfg.nonsense=1"])
