"""``sdkd bench`` (issue 23): every hot op timed, ``auto``'s pick against the reference, table + JSON."""

from __future__ import annotations

import json

import pytest
import torch

from sdkd import bench
from sdkd.cli import console_main, main
from sdkd.ops import _ext, registered_ops


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "sub" / "b.json"
    assert main(["bench", "--quick", "--out", str(out)]) == 0
    return out, json.loads(out.read_text())


def test_quick_run_covers_every_hot_op(quick_run):
    _, doc = quick_run
    ops = set(registered_ops())
    assert {r["op"] for r in doc["rows"]} == ops and {r["op"] for r in doc["overhead"]} == ops
    for r in doc["rows"] + doc["overhead"]:
        assert r["auto_pick"].partition(":")[0] in registered_ops()[r["op"]].backend_names(), r
        assert r["auto_s"] > 0 and r["reference_s"] > 0
        assert r["speedup"] == pytest.approx(r["reference_s"] / r["auto_s"])
    assert all(r["torch_op_s"] > 0 and r["torch_op"] for r in doc["overhead"])
    assert doc["format"] == bench.FORMAT and doc["torch"] == torch.__version__ and doc["quick"] is True


def test_auto_pick_is_the_dispatchers(quick_run):
    """The reported pick is what the op's dispatcher selected, e.g. the C++ kernel for the spectral loss."""
    _, doc = quick_run
    picks = {r["op"]: r["auto_pick"] for r in doc["rows"]}
    if _ext.unavailable_reason("spectral_loss_cpu") is None and not torch.cuda.is_available():
        assert picks["spectral_loss"].partition(":")[0] == "cpu"
    assert picks["attention"] == "reference"  # no fast attention on CPU


def test_table_and_out_file(quick_run, capsys):
    out, doc = quick_run
    table = bench.format_table(doc)
    for r in doc["rows"]:
        assert f"| {r['op']} | {r['shape']} | {r['passes']} | {r['auto_pick']} |" in table
    # --out replaces an earlier sdkd bench file, and refuses anything else before timing anything
    other = out.parent / "notes.json"
    other.write_text('{"mine": 1}')
    assert console_main(["bench", "--quick", "--out", str(other)]) == 2
    assert "was not written by sdkd bench" in capsys.readouterr().err and other.read_text() == '{"mine": 1}'
    bench.check_out_path(out)  # no error: ours


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cuda_without_gpu_is_one_line(capsys):
    assert console_main(["bench", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err == "sdkd: error: --device cuda: no CUDA GPU is visible to torch (torch.cuda.is_available() is False)\n"


def test_full_cases_cover_every_op_on_both_devices():
    ops = set(registered_ops())
    for device in ("cpu", "cuda"):
        assert {c.op for c in bench.cases(device, quick=False)} == ops
    assert {c.op for c in bench.tiny_cases()} == ops == set(bench._torch_baselines())
