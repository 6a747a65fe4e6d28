"""End to end through the CLI: train a teacher and a student, distill, evaluate (tiny data)."""

import importlib
import json
from pathlib import Path

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


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture
def no_data(monkeypatch):
    """Any data loading or generation fails the test: the checks under test must come before it."""

    def forbidden(*args, **kwargs):
        raise AssertionError("data was loaded or generated before the config was checked")

    monkeypatch.setattr("sdkd.train.run.build_datasets", forbidden)
    monkeypatch.setattr("sdkd.data.navier_stokes.load_or_generate", forbidden)


def test_free_form_typos_fail_before_any_data(no_data):
    distill = ["distill", "--config", str(CONFIGS / "nse" / "distill.yaml")]
    with pytest.raises(ConfigError, match=r"^distill.kd: .*unexpected keyword argument 'alpah'$"):
        main([*distill, "distill.kd.alpah=2"])
    with pytest.raises(ConfigError, match=r"^model.cfg: model 'unet' has no config key\(s\) \['widht'\]"):
        main(["train", "--config", str(CONFIGS / "nse" / "baseline.yaml"), "model.cfg.widht=[8, 16]"])
    with pytest.raises(ConfigError, match=r"^model.cfg: model 'st_alternet' has no config key\(s\) \['hidT'\]"):
        main(["train", "--config", str(CONFIGS / "nse" / "teacher.yaml"), "model.cfg.hidT=64"])


def test_run_stage_checks_config_and_teachers_before_any_data(no_data, tmp_path):
    from sdkd.train import CheckpointError
    from sdkd.train.run import run_stage

    cfg = build_config([], [f"out_dir={tmp_path}"])
    cfg["model"]["cfg"] = {"widht": 3}  # a config built by hand, not through build_config
    with pytest.raises(ConfigError, match="widht"):
        run_stage(cfg, device="cpu")
    cfg = build_config([], [f"out_dir={tmp_path}", "stage=distill", f"distill.teachers=[{tmp_path / 'nope.pt'}]"])
    with pytest.raises(CheckpointError, match="nope.pt.*does not exist"):
        run_stage(cfg, device="cpu")


class _FakeRun:
    """Stands in for run_stage: records what the CLI asked for and returns a finished fit."""

    def __init__(self, monkeypatch):
        self.calls = []
        monkeypatch.setattr("sdkd.train.run.run_stage", self)

    def __call__(self, cfg, resume=False, device=None, overwrite=False):
        from sdkd.train import FitResult

        self.calls.append((cfg, device))
        return FitResult(best_val=0.25, best_epoch=2, epochs_run=3, stopped_early=False, best_path=Path("o/best.pt"))


def test_overrides_before_and_after_options(monkeypatch, capsys):
    fake = _FakeRun(monkeypatch)
    baseline = str(CONFIGS / "nse" / "baseline.yaml")
    argv = ["train", "--config", baseline, "train.epochs=1", "--device", "cpu", "data.preset=small", "--resume"]
    assert main(argv) == 0
    ((cfg, device),) = fake.calls
    assert (cfg["train"]["epochs"], cfg["data"]["preset"], device) == (1, "small", "cpu")
    assert "best val MSE 0.25 at epoch 3; checkpoint o/best.pt" in capsys.readouterr().out


def test_bad_arguments_show_the_subcommand_usage(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "train.epochs=1", "--bogus"])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert err.startswith("usage: sdkd train ") and "unrecognized arguments: --bogus" in err


@pytest.mark.parametrize("rank", ["0", "1", "3"])
def test_summary_line_on_rank_zero_only(monkeypatch, capsys, rank):
    _FakeRun(monkeypatch)
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert main(["train", "--config", str(CONFIGS / "nse" / "baseline.yaml")]) == 0
    assert ("best val MSE" in capsys.readouterr().out) == (rank == "0")


def test_bare_train_says_it_trains_the_defaults(monkeypatch, capsys, tmp_path):
    fake = _FakeRun(monkeypatch)
    monkeypatch.chdir(tmp_path)
    assert main(["train"]) == 0
    err = capsys.readouterr().err
    cfg = fake.calls[0][0]
    assert f"no --config: the built-in defaults (model {cfg['model']['name']}" in err
    assert f"{cfg['train']['epochs']} epochs) into {cfg['out_dir']}" in err
    for argv in (["train", "--config", str(CONFIGS / "nse" / "baseline.yaml")], ["train", "train.epochs=1"]):
        main(argv)  # a config or overrides: the user chose, nothing to say
        assert "no --config" not in capsys.readouterr().err


@pytest.fixture(scope="module")
def student_ckpt(series, tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    assert main(["train", *_args(series, out, "unet", epochs=1)]) == 0
    return out / "best.pt"


def test_eval_results_json_stores_params_as_int(student_ckpt, tmp_path):
    out = tmp_path / "eval"
    assert main(["eval", "--checkpoint", str(student_ckpt), "--name", "s", "--out", str(out)]) == 0
    params = json.loads((out / "results.json").read_text())["s"]["params"]
    model, _ = load_model(student_ckpt)
    assert type(params) is int and params == sum(p.numel() for p in model.parameters())


def test_eval_of_a_broken_checkpoint_names_it_and_writes_no_results(student_ckpt, tmp_path):
    """A checkpoint whose weights hold NaN (finite inputs, NaN predictions): one error naming the row and the
    cause, and no results file with NaN in it."""
    from sdkd.train import save_checkpoint

    ck = load_checkpoint(student_ckpt)
    name = next(k for k, v in ck["model"].items() if v.is_floating_point() and v.dim() == 4)  # a conv weight
    ck["model"][name] = torch.full_like(ck["model"][name], float("nan"))
    bad = save_checkpoint(tmp_path / "bad.pt", ck)
    out = tmp_path / "eval"
    with pytest.raises(
        ValueError, match=r"^evaluate: broken predicts \d+ non-finite values \(NaN or inf\) on the test "
    ):
        main(["eval", "--checkpoint", str(bad), "--name", "broken", "--out", str(out)])
    assert not (out / "results.json").exists() and not (out / "results.md").exists()


def test_evaluate_refuses_metrics_that_overflow(series):
    """Finite predictions too large for float32 squares gave mse = inf in the table; now an error."""
    from sdkd.train.evaluate import evaluate

    class Huge(torch.nn.Module):
        def forward(self, x):
            return torch.full_like(x, 3e38)

    test = build_datasets(build_config([], _args(series, "unused", "unet"))["data"])["test"]
    with pytest.raises(ValueError, match=r"^evaluate: huge's mse, mae, low_err, high_err, mse_phys .* overflowed"):
        evaluate(Huge(), test, name="huge", latency=False)


def test_eval_openstl_metrics_are_summed_per_frame(student_ckpt, tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["eval", "--checkpoint", str(student_ckpt), "--name", "s", "--out", str(out), "--openstl-metrics"]
    assert main(argv) == 0
    assert "mse_openstl" in capsys.readouterr().out
    row = json.loads((out / "results.json").read_text())["s"]
    model, ck = load_model(student_ckpt)
    test = build_datasets(ck["config"]["data"])["test"]
    x = torch.stack([test[i][0] for i in range(len(test))])
    y = torch.stack([test[i][1] for i in range(len(test))])
    with torch.no_grad():
        p = model(x)
    err, err_phys = p - y, test.denormalize(p) - test.denormalize(y)
    per_frame = {  # OpenSTL: sum over (C, H, W) of each frame, then the mean over samples and frames
        "mse_openstl": err.square().sum((2, 3, 4)).mean(),
        "mae_openstl": err.abs().sum((2, 3, 4)).mean(),
        "mse_openstl_phys": err_phys.square().sum((2, 3, 4)).mean(),
        "mae_openstl_phys": err_phys.abs().sum((2, 3, 4)).mean(),
    }
    for key, want in per_frame.items():
        assert row[key] == pytest.approx(want.item(), rel=1e-4), key
    assert row["mse_openstl"] == pytest.approx(row["mse"] * 12 * 12, rel=1e-5)  # C * H * W = 1 * 12 * 12


def test_eval_figures_without_matplotlib_names_the_extra(student_ckpt, tmp_path, monkeypatch, capsys):
    import sys

    from sdkd.cli import console_main

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails as if not installed
    argv = ["eval", "--checkpoint", str(student_ckpt), "--out", str(tmp_path / "e"), "--figures"]
    assert console_main(argv) == 2
    err = capsys.readouterr().err
    assert err == "sdkd: error: the optional package 'matplotlib' is not installed: pip install 'sdkd[plot]'\n"


def test_eval_latency_is_marked_machine_dependent_and_a_busy_machine_warns(student_ckpt, tmp_path, monkeypatch, capsys):
    summary_module = importlib.import_module("sdkd.models.summary")  # the module (sdkd.models.summary is a function)

    out = tmp_path / "eval"
    assert main(["eval", "--checkpoint", str(student_ckpt), "--name", "s", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "latency_ms: median time of one single-sample forward pass on this machine" in printed
    row = json.loads((out / "results.json").read_text())["s"]
    assert row["latency_ms"] > 0 and row["latency_spread"] >= 1.0

    busy = summary_module.LatencyStats(median_ms=3.0, p10_ms=1.0, p90_ms=600.0, runs=10)
    monkeypatch.setattr(summary_module, "latency_stats", lambda *a, **k: busy)
    with pytest.warns(RuntimeWarning, match=r"varied 600\.0x between runs.*latency_ms is unreliable"):
        assert main(["eval", "--checkpoint", str(student_ckpt), "--name", "s", "--out", str(tmp_path / "e2")]) == 0


def test_torchrun_train_through_the_cli_exits_cleanly(series, tmp_path):
    """``torchrun -m sdkd.cli train`` as the README runs it: two CPU ranks, status 0, a complete checkpoint."""
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent.parent)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "sdkd.cli"]
    r = subprocess.run(
        [*cmd, "train", *_args(series, out, "unet", epochs=1), "model.cfg.widths=[8, 16]"],
        env=env,
        timeout=240,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    ck = load_checkpoint(out / "last.pt")
    assert len(ck["metrics"]) == 1 and (out / "best.pt").is_file()  # one epoch, complete


def test_leave_torchrun_tears_the_group_down_then_exits_with_the_status(monkeypatch):
    from sdkd.train import distributed

    calls = []

    class Exited(Exception):
        pass

    def fake_exit(rc):
        calls.append(("exit", rc))
        raise Exited

    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(distributed.dist, "barrier", lambda: calls.append("barrier"))
    monkeypatch.setattr(distributed.dist, "destroy_process_group", lambda: calls.append("destroy"))
    monkeypatch.setattr(distributed.os, "_exit", fake_exit)
    with pytest.raises(Exited):
        distributed.leave_torchrun(0)
    assert calls == ["barrier", "destroy", ("exit", 0)]
    calls.clear()
    assert distributed.leave_torchrun(2) == 2 and calls == []  # a failed rank: no barrier a peer may never reach
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    assert distributed.leave_torchrun(0) == 0 and calls == []  # not under torchrun
