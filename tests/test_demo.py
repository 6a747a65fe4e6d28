"""``sdkd demo`` end to end at the smoke budget: three stages, one table, figures, stage reuse."""

import json
import re

import pytest

from sdkd.cli import main
from sdkd.train.checkpoint import load_checkpoint, save_checkpoint
from sdkd.train.demo import compare_line


def test_demo_smoke_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SDKD_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "demo"
    assert main(["demo", "--budget", "smoke", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    table = text[text.index("| model |") :]
    assert table.splitlines()[0].split("|")[2].strip() == "mse"  # test MSE is the first column
    for row in ("| teacher |", "| baseline |", "| distilled |"):
        assert row in table
    rows = json.loads((out / "results.json").read_text())
    assert set(rows) == {"teacher", "baseline", "distilled"}
    assert rows["baseline"]["params"] == rows["distilled"]["params"]  # same student architecture
    change = 100.0 * abs(rows["distilled"]["mse"] - rows["baseline"]["mse"]) / rows["baseline"]["mse"]
    line = re.search(r"distilled vs baseline test MSE: (\d+\.\d)% (lower|higher)\n", text)
    assert line and line.group(1) == f"{change:.1f}"
    assert line.group(2) == ("lower" if rows["distilled"]["mse"] <= rows["baseline"]["mse"] else "higher")
    for name in ("frames.png", "spectra.png", "band_errors.png"):
        assert (out / name).stat().st_size > 0
    for stage, i in (("teacher", 1), ("baseline", 2), ("distilled", 3)):  # the stage/ETA line after each epoch
        assert re.search(rf"^stage {i}/3 {stage}: epoch 2/2, ~\d+:\d\d left in this stage", text, re.M)
    stamp = (out / "teacher" / "best.pt").stat().st_mtime_ns
    # A stage written while the demo turned bars off (train.progress false) is still reused: display only.
    ck = load_checkpoint(out / "teacher" / "last.pt")
    ck["config"]["train"]["progress"] = False
    save_checkpoint(out / "teacher" / "last.pt", ck)
    assert main(["demo", "--budget", "smoke", "--out", str(out), "--no-figures"]) == 0  # reuses finished stages
    assert (out / "teacher" / "best.pt").stat().st_mtime_ns == stamp
    assert json.loads((out / "results.json").read_text())["distilled"]["mse"] == rows["distilled"]["mse"]


@pytest.mark.parametrize(
    "baseline, distilled, expected",
    [(2.0, 0.956, "52.2% lower"), (2.0, 2.2, "10.0% higher"), (1.0, 1.0, "0.0% lower")],
)
def test_compare_line_has_no_sign_before_lower_or_higher(baseline, distilled, expected):
    assert compare_line(baseline, distilled) == f"distilled vs baseline test MSE: {expected}"


def test_demo_without_matplotlib_skips_figures_naming_the_extra(tmp_path, monkeypatch):
    import sys

    from sdkd.train.demo import run_demo

    monkeypatch.setenv("SDKD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    lines = []
    rows = run_demo("smoke", tmp_path / "demo", log=lines.append)
    assert set(rows) == {"teacher", "baseline", "distilled"}
    assert "figures skipped: the optional package 'matplotlib' is not installed: pip install 'sdkd[plot]'" in lines
    assert not list((tmp_path / "demo").glob("*.png"))
