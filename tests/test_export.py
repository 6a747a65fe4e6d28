"""``sdkd export``: ONNX (run in onnxruntime) and ``torch.export`` programs agree with the eager model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_forecast import IN_SHAPE, OUT_FRAMES, SPEC, make_checkpoint, physical_input

import sdkd
from sdkd.cli import main
from sdkd.export import ExportedModel, export_checkpoint
from sdkd.train import CheckpointError

TEACHER_SPEC = {
    "name": "st_alternet",
    "in_shape": list(IN_SHAPE),
    "out_frames": OUT_FRAMES,
    "cfg": {"hid_S": 8, "hid_T": 16, "N_S": 2, "N_T": 1, "num_heads": 2},
}


def _need_onnx():
    for mod in ("onnx", "onnxscript"):
        pytest.importorskip(mod, reason=f"ONNX export needs {mod} (pip install 'sdkd[export]')")
    return pytest.importorskip(
        "onnxruntime", reason="running ONNX files needs onnxruntime (pip install 'sdkd[export]')"
    )


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ck") / "student.pt")


@pytest.fixture(scope="module")
def forecaster(ckpt):
    return sdkd.Forecaster.from_checkpoint(ckpt, device="cpu")


def test_onnx_export_runs_in_onnxruntime(ckpt, forecaster, tmp_path, capsys):
    ort = _need_onnx()
    out = tmp_path / "student.onnx"
    assert main(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--out", str(out)]) == 0
    assert "parity with the eager model" in capsys.readouterr().out
    assert not list(tmp_path.glob("*.data"))  # weights inside the one file
    meta = json.loads((tmp_path / "student.onnx.json").read_text())
    assert meta["normalization"] == "baked" and meta["in_shape"] == list(IN_SHAPE) and meta["model"] == "mixer"
    np.testing.assert_allclose(meta["mean"], forecaster.mean.numpy())
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x"] and [o.name for o in session.get_outputs()] == ["forecast"]
    for batch in (1, 5):  # dynamic batch axis
        x = physical_input(batch)
        (y,) = session.run(None, {"x": x.numpy()})
        assert y.shape == (batch, OUT_FRAMES, *IN_SHAPE[1:])
        np.testing.assert_allclose(y, forecaster.forecast(x).numpy(), rtol=1e-5, atol=1e-3)


def test_torch_export_program_matches_eager(ckpt, forecaster, tmp_path):
    res = export_checkpoint(ckpt, tmp_path / "student.pt2", "torch-export")
    assert res.max_abs_err is not None and res.max_abs_err < 1e-3
    program = torch.export.load(str(res.path)).module()
    for batch in (1, 4):
        x = physical_input(batch)
        with torch.no_grad():
            torch.testing.assert_close(program(x), forecaster.forecast(x), rtol=1e-5, atol=1e-3)


def test_normalisation_stored_beside(ckpt, forecaster, tmp_path):
    res = export_checkpoint(ckpt, tmp_path / "raw.pt2", "torch-export", normalization="beside")
    meta = json.loads(res.meta_path.read_text())
    assert meta["normalization"] == "beside"
    mean = torch.tensor(meta["mean"]).view(-1, 1, 1)
    std = torch.tensor(meta["std"]).view(-1, 1, 1)
    x = physical_input(3)
    z = (x - mean) / std
    with torch.no_grad():  # the graph itself works in normalised units ...
        torch.testing.assert_close(
            torch.export.load(str(res.path)).module()(z), forecaster.module.model(z), rtol=1e-5, atol=1e-4
        )
    # ... and ExportedModel applies the stored statistics around it.
    np.testing.assert_allclose(ExportedModel(res.path)(x), forecaster.forecast(x).numpy(), rtol=1e-5, atol=1e-3)


def test_teacher_exports_where_operators_allow(tmp_path):
    """The teacher (fused attention custom op inside) exports as a torch.export program."""
    ck = make_checkpoint(tmp_path / "teacher.pt", spec=TEACHER_SPEC)
    res = export_checkpoint(ck, tmp_path / "teacher.pt2", "torch-export")
    x = physical_input(2)
    f = sdkd.Forecaster.from_checkpoint(ck)
    np.testing.assert_allclose(ExportedModel(res.path)(x), f.forecast(x).numpy(), rtol=1e-5, atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["st_alternet", "simvp", "unet", "resnet"])
def test_other_models_export_to_onnx(name, tmp_path):
    _need_onnx()
    cfgs = {
        "st_alternet": TEACHER_SPEC["cfg"],
        "simvp": {"hid_S": 8, "hid_T": 16, "N_S": 2, "N_T": 2},
        "unet": {"widths": [4, 8, 8]},
        "resnet": {"widths": [4, 8], "depths": [1, 1], "strides": [1, 2]},
    }
    ck = make_checkpoint(tmp_path / "m.pt", spec={**SPEC, "name": name, "cfg": cfgs[name]})
    res = export_checkpoint(ck, tmp_path / "m.onnx", "onnx")  # raises ExportError on disagreement
    assert res.max_abs_err < 1e-3


def test_export_bad_arguments(ckpt, tmp_path):
    with pytest.raises(ValueError, match=r"format must be one of \('onnx', 'torch-export'\)"):
        export_checkpoint(ckpt, tmp_path / "m.tflite", "tflite")
    with pytest.raises(ValueError, match="normalization must be one of"):
        export_checkpoint(ckpt, tmp_path / "m.pt2", "torch-export", normalization="inside")
    with pytest.raises(CheckpointError, match="does not exist"):
        export_checkpoint(tmp_path / "nope.pt", tmp_path / "m.pt2", "torch-export")
    with pytest.raises(SystemExit):
        main(["export", "--checkpoint", str(ckpt), "--format", "tflite", "--out", str(tmp_path / "m")])
    with pytest.raises(FileNotFoundError, match="exported model not found"):
        ExportedModel(tmp_path / "absent.onnx")


def test_export_check_catches_an_exported_file_that_returns_nan(ckpt, tmp_path, monkeypatch):
    """The parity check took max(err, nan) == err: an exported graph returning NaN passed it. Here the exporter and
    the runtime are stand-ins (a real export is slow): the file returns NaN, the check must say so."""
    from sdkd import export as E

    def fake_export(module, example, path, fmt, opset=None):
        path.write_bytes(b"stand-in")
        return path

    class NaNRuntime:
        def __init__(self, path):
            pass

        def __call__(self, x):
            return np.full((len(x), OUT_FRAMES, *IN_SHAPE[1:]), np.nan, dtype=np.float32)

    monkeypatch.setattr(E, "export_module", fake_export)
    monkeypatch.setattr(E, "ExportedModel", NaNRuntime)
    with pytest.raises(E.ExportError, match=r"returns \d+ non-finite values \(NaN or inf\) at batch 1 where the eager"):
        export_checkpoint(ckpt, tmp_path / "m.pt2", "torch-export")


@pytest.mark.parametrize("missing", ["onnx", "onnxscript"])
def test_onnx_export_without_onnx_is_one_line_naming_the_extra(ckpt, tmp_path, monkeypatch, capsys, missing):
    import sys

    from sdkd.cli import console_main

    monkeypatch.setitem(sys.modules, missing, None)  # as if not installed
    argv = ["export", "--checkpoint", str(ckpt), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]
    assert console_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("sdkd: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert missing in err and "pip install 'sdkd[export]'" in err
    assert not (tmp_path / "m.onnx").exists()
