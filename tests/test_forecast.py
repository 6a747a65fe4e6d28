"""Stage 4: ``sdkd.Forecaster``, ``sdkd predict`` and safe checkpoint loading."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import sdkd
from sdkd.cli import console_main, main
from sdkd.models import build_model
from sdkd.train import CheckpointError, save_checkpoint

IN_SHAPE = (4, 2, 8, 8)  # T_in, C, H, W
OUT_FRAMES = 3
MEAN, STD = [280.0, -3.0], [12.0, 0.5]  # physical units far from z-scores, so a missing (de)normalisation shows
SPEC = {"name": "mixer", "in_shape": list(IN_SHAPE), "out_frames": OUT_FRAMES, "cfg": {"dim": 16, "depth": 1}}


def make_checkpoint(path: Path, spec: dict = SPEC, mean=MEAN, std=STD, **extra) -> Path:
    """A checkpoint laid out as ``sdkd train``/``distill`` writes it, with random weights."""
    torch.manual_seed(0)
    model = build_model(spec["name"], tuple(spec["in_shape"]), spec["out_frames"], **spec["cfg"])
    payload = {
        "model": model.state_dict(),
        "model_spec": spec,
        "normalization": {
            "mean": torch.tensor(mean, dtype=torch.float64),
            "std": torch.tensor(std, dtype=torch.float64),
        },
        "config": {"stage": "train", "seed": 42},
        "sdkd_version": sdkd.__version__,
        **extra,
    }
    return save_checkpoint(path, payload)


def reference_forecast(ckpt: Path, x: torch.Tensor) -> torch.Tensor:
    """Independent of ``Forecaster``: rebuild the model, z-score by hand, de-normalise by hand."""
    ck = torch.load(ckpt, weights_only=True)
    spec = ck["model_spec"]
    model = build_model(spec["name"], tuple(spec["in_shape"]), spec["out_frames"], **spec["cfg"]).eval()
    model.load_state_dict(ck["model"])
    mean = ck["normalization"]["mean"].float().view(-1, 1, 1)
    std = ck["normalization"]["std"].float().view(-1, 1, 1)
    with torch.no_grad():
        return model((x - mean) / std) * std + mean


def physical_input(batch: int | None = None) -> torch.Tensor:
    shape = IN_SHAPE if batch is None else (batch, *IN_SHAPE)
    return torch.randn(shape) * torch.tensor(STD).view(-1, 1, 1) + torch.tensor(MEAN).view(-1, 1, 1)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ck") / "best.pt")


@pytest.fixture(scope="module")
def forecaster(ckpt) -> sdkd.Forecaster:
    return sdkd.Forecaster.from_checkpoint(ckpt, device="cpu", batch_size=2)


# ----------------------------------------------------------------------------- Forecaster
def test_forecast_matches_manual_normalisation(ckpt, forecaster):
    x = physical_input(5)
    expected = reference_forecast(ckpt, x)
    y = forecaster.forecast(x)  # 5 samples in chunks of 2
    assert isinstance(y, torch.Tensor) and y.shape == (5, OUT_FRAMES, *IN_SHAPE[1:])
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-4)
    # Outputs live in physical units: channel 0 is centred near 280, not near 0.
    assert abs(float(y[:, :, 0].mean()) - MEAN[0]) < 5 * STD[0]
    assert forecaster.in_shape == IN_SHAPE and forecaster.out_frames == OUT_FRAMES and forecaster.name == "mixer"


def test_forecast_single_window_numpy_and_dtypes(ckpt, forecaster):
    x = physical_input(3)
    batched = forecaster(x.numpy().astype(np.float64))
    assert isinstance(batched, np.ndarray) and batched.dtype == np.float64
    single = forecaster.forecast(x[1].numpy())
    assert isinstance(single, np.ndarray) and single.shape == (OUT_FRAMES, *IN_SHAPE[1:]) and single.dtype == np.float32
    np.testing.assert_allclose(single, batched[1], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(single, reference_forecast(ckpt, x[1:2])[0].numpy(), rtol=1e-5, atol=1e-4)
    ints = forecaster.forecast(np.full((1, *IN_SHAPE), 3, dtype=np.int32))
    np.testing.assert_allclose(ints, reference_forecast(ckpt, torch.full((1, *IN_SHAPE), 3.0)).numpy(), atol=1e-4)
    assert forecaster.forecast(torch.empty(0, *IN_SHAPE)).shape == (0, OUT_FRAMES, *IN_SHAPE[1:])


def test_forecast_runs_under_inference_mode(forecaster):
    x = physical_input(2).requires_grad_()
    y = forecaster.forecast(x)
    assert not y.requires_grad
    assert all(not p.requires_grad or p.grad is None for p in forecaster.module.parameters())


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((2, 5, 2, 8, 8), r"5 input frames .* T_in = 4"),
        ((4, 3, 8, 8), r"3 channels .* C = 2"),
        ((2, 4, 2, 8, 9), r"8x9 grid .* 8x8"),
        ((2, 8, 8), r"one window \(T_in, C, H, W\)"),
    ],
)
def test_forecast_rejects_wrong_shapes(forecaster, shape, match):
    with pytest.raises(ValueError, match=match):
        forecaster.forecast(torch.zeros(shape))


def test_forecast_rejects_non_finite_and_non_real(forecaster):
    x = physical_input(3)
    x[2, 1, 0, 3, 3] = float("nan")
    x[2, 0, 1, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"2 non-finite values .* sample 2"):
        forecaster.forecast(x)
    with pytest.raises(TypeError, match="real numbers"):
        forecaster.forecast(torch.zeros((1, *IN_SHAPE), dtype=torch.complex64))


def test_checkpoint_with_pickled_object_is_refused_without_running_it(tmp_path):
    sentinel = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(sentinel),))

    ck = torch.load(make_checkpoint(tmp_path / "ok.pt"), weights_only=True)
    ck["config"] = {"callback": Payload()}
    torch.save(ck, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"refusing to load .*pickled Python objects"):
        sdkd.Forecaster.from_checkpoint(tmp_path / "evil.pt")
    assert not sentinel.exists()


def test_bad_checkpoints_give_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        sdkd.Forecaster.from_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="junk.pt"):
        sdkd.Forecaster.from_checkpoint(tmp_path / "junk.pt")
    good = make_checkpoint(tmp_path / "a.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        sdkd.Forecaster.from_checkpoint(tmp_path / "cut.pt")
    ck = torch.load(tmp_path / "a.pt", weights_only=True)
    del ck["normalization"]
    save_checkpoint(tmp_path / "nonorm.pt", {k: v for k, v in ck.items() if k not in ("format", "version")})
    with pytest.raises(CheckpointError, match="no normalization"):
        sdkd.Forecaster.from_checkpoint(tmp_path / "nonorm.pt")
    make_checkpoint(tmp_path / "badstd.pt", std=[1.0, 0.0])
    with pytest.raises(CheckpointError, match=r"std must be finite and > 0"):
        sdkd.Forecaster.from_checkpoint(tmp_path / "badstd.pt")


def test_forecaster_from_a_trained_run(tmp_path):
    """A checkpoint written by the real training stage loads and forecasts in the data's units."""
    from sdkd.data import ArrayDataset
    from sdkd.train import build_config
    from sdkd.train.run import run_stage

    series = (50.0 + 4.0 * np.random.default_rng(0).standard_normal((60, 1, 8, 8))).astype(np.float32)
    np.save(tmp_path / "series.npy", series)
    cfg = build_config(
        [],
        [
            "data.name=array",
            f"data.path={tmp_path / 'series.npy'}",
            "data.input_frames=3",
            "data.output_frames=2",
            "data.batch_size=8",
            "model.name=mixer",
            "model.cfg={dim: 8, depth: 1}",
            "train.epochs=1",
            "train.progress=false",
            f"out_dir={tmp_path / 'run'}",
        ],
    )
    res = run_stage(cfg, device="cpu", log=lambda *_: None)
    f = sdkd.Forecaster.from_checkpoint(res.best_path)
    test = ArrayDataset(tmp_path / "series.npy", input_frames=3, output_frames=2, split="test")
    x, _ = test[0]
    with torch.no_grad():
        expected = test.denormalize(f.module.model(x[None]))[0]
    torch.testing.assert_close(f.forecast(test.denormalize(x)), expected, rtol=1e-5, atol=1e-4)
    assert torch.allclose(f.mean, test.mean) and torch.allclose(f.std, test.std)


# ----------------------------------------------------------------------------- sdkd predict
def test_predict_windows_npy_to_npz_with_figure(ckpt, forecaster, tmp_path, capsys):
    x = physical_input(5).numpy()
    np.save(tmp_path / "in.npy", x)
    rc = main(
        ["predict", "--checkpoint", str(ckpt), "--input", str(tmp_path / "in.npy"), "--out", str(tmp_path / "o.npz")]
        + ["--batch-size", "2", "--figure", str(tmp_path / "fig.png"), "--sample", "3", "--no-progress"]
    )
    assert rc == 0 and "5 window(s)" in capsys.readouterr().out
    with np.load(tmp_path / "o.npz") as z:
        np.testing.assert_allclose(z["forecast"], forecaster.forecast(x), rtol=1e-5, atol=1e-4)
        assert json.loads(str(z["metadata"]))["model"] == "mixer"
    png = (tmp_path / "fig.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000


def test_predict_series_h5_sliding_windows(ckpt, forecaster, tmp_path):
    h5py = pytest.importorskip("h5py")
    series = physical_input(3).numpy().reshape(12, *IN_SHAPE[1:])
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["vort"] = series
    main(
        ["predict", "--checkpoint", str(ckpt), "--input", str(tmp_path / "s.h5"), "--out", str(tmp_path / "o.h5")]
        + ["--stride", "3", "--batch-size", "2", "--no-progress"]
    )
    starts = np.arange(0, 12 - 4 + 1, 3)
    expected = forecaster.forecast(np.stack([series[s : s + 4] for s in starts]))
    with h5py.File(tmp_path / "o.h5", "r") as f:
        np.testing.assert_array_equal(f["window_start"][()], starts)
        np.testing.assert_allclose(f["forecast"][()], expected, rtol=1e-5, atol=1e-4)
    # --last: one window from the last T_in frames, written (T_out, C, H, W) as for any single window.
    main(
        ["predict", "--checkpoint", str(ckpt), "--input", str(tmp_path / "s.h5"), "--out", str(tmp_path / "l.npy")]
        + ["--last", "--no-progress"]
    )
    last = np.load(tmp_path / "l.npy")
    assert last.shape == (OUT_FRAMES, *IN_SHAPE[1:])
    np.testing.assert_allclose(last, forecaster.forecast(series[-4:]), rtol=1e-5, atol=1e-4)


def test_predict_single_window_netcdf(ckpt, forecaster, tmp_path):
    xr = pytest.importorskip("xarray")
    x = physical_input().numpy()
    xr.Dataset({"t2m": (("time", "c", "lat", "lon"), x)}).to_netcdf(tmp_path / "in.nc")
    main(
        ["predict", "--checkpoint", str(ckpt), "--input", str(tmp_path / "in.nc"), "--out", str(tmp_path / "o.nc")]
        + ["--no-progress"]
    )
    with xr.open_dataset(tmp_path / "o.nc") as ds:
        out = ds["forecast"]
        assert out.dims == ("lead", "channel", "y", "x")
        np.testing.assert_allclose(out.values, forecaster.forecast(x), rtol=1e-5, atol=1e-4)


def test_predict_progress_bar(ckpt, tmp_path, capsys):
    np.save(tmp_path / "in.npy", physical_input(4).numpy())
    main(
        ["predict", "--checkpoint", str(ckpt), "--input", str(tmp_path / "in.npy"), "--out", str(tmp_path / "o.npy")]
        + ["--batch-size", "1"]
    )
    assert "predict mixer" in capsys.readouterr().err


def test_predict_bad_inputs(ckpt, tmp_path):
    def predict(inp: Path, out: str = "o.npy", *extra: str):
        return main(
            ["predict", "--checkpoint", str(ckpt), "--input", str(inp), "--out", str(tmp_path / out)]
            + ["--no-progress", *extra]
        )

    (tmp_path / "junk.npy").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match=r"cannot read .*junk\.npy"):
        predict(tmp_path / "junk.npy")
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        predict(tmp_path / "missing.npy")
    np.save(tmp_path / "c3.npy", np.zeros((2, 4, 3, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"3 channels .* C = 2"):
        predict(tmp_path / "c3.npy")
    np.save(tmp_path / "short.npy", np.zeros((3, 2, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"series has 3 frames .* T_in = 4"):
        predict(tmp_path / "short.npy")
    np.save(tmp_path / "grid.npy", np.zeros((6, 2, 16, 8), np.float32))
    with pytest.raises(ValueError, match=r"16x8 grid .* 8x8"):
        predict(tmp_path / "grid.npy")
    bad = physical_input(3).numpy()
    bad[1, 0, 0, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(ValueError, match=r"non-finite values .* sample 1"):
        predict(tmp_path / "nan.npy")
    with pytest.raises(ValueError, match=r"unsupported output type '\.csv'"):
        predict(tmp_path / "c3.npy", "o.csv")
    assert not (tmp_path / "o.npy").exists()


def test_forecast_of_finite_but_huge_inputs_is_an_error_not_nan(forecaster):
    """Inputs around 1e25 are finite but overflow float32 inside the model: the forecast was all NaN, silently."""
    x = physical_input(2) * 1e25
    with pytest.raises(ValueError) as exc:
        forecaster.forecast(x)
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith("the forecast of mixer has ") and "non-finite values (NaN or inf) although its inputs" in msg
    assert f"max |input| is {x.abs().max().item():.3g}," in msg
    assert "280 +- 12" in msg and "check the inputs' units and scale" in msg
    with pytest.raises(ValueError, match="non-finite values"):
        forecaster.forecast(x[0].numpy())  # one window, numpy in
    forecaster.forecast(physical_input(2) * 1e3)  # large but fine: no error


def test_predict_writes_nothing_when_the_forecast_is_not_finite(ckpt, tmp_path):
    """`sdkd predict` wrote an all-NaN forecast with rc 0 for finite inputs around 1e25; now one line names the
    windows and the cause, and no output file is written."""
    x = physical_input(5).numpy()
    x[3] *= 1e25  # only window 3 is out of range
    np.save(tmp_path / "huge.npy", x)
    argv = ["predict", "--checkpoint", str(ckpt), "--input", str(tmp_path / "huge.npy"), "--no-progress"]
    with pytest.raises(ValueError, match=r"--input huge.npy: the forecast of window\(s\) 2:4 of mixer has \d+ non-fin"):
        main([*argv, "--out", str(tmp_path / "o.npy"), "--batch-size", "2"])
    assert not (tmp_path / "o.npy").exists()
    assert console_main([*argv, "--out", str(tmp_path / "o.npz")]) == 2
    assert not (tmp_path / "o.npz").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_forecast_on_gpu_matches_cpu(ckpt, forecaster):
    gpu = sdkd.Forecaster.from_checkpoint(ckpt, device="cuda")
    x = physical_input(3)
    y = gpu.forecast(x.cuda())
    assert y.device.type == "cuda"
    torch.testing.assert_close(y.cpu(), forecaster.forecast(x), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(gpu.forecast(x.numpy()), forecaster.forecast(x.numpy()), rtol=1e-4, atol=1e-3)
