"""``sdkd demo`` end to end at the smoke budget: three stages, one table, figures, stage reuse."""

import json

from sdkd.cli import main


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
    for name in ("frames.png", "spectra.png", "band_errors.png"):
        assert (out / name).stat().st_size > 0
    stamp = (out / "teacher" / "best.pt").stat().st_mtime_ns
    assert main(["demo", "--budget", "smoke", "--out", str(out), "--no-figures"]) == 0  # reuses finished stages
    assert (out / "teacher" / "best.pt").stat().st_mtime_ns == stamp
    assert json.loads((out / "results.json").read_text())["distilled"]["mse"] == rows["distilled"]["mse"]
