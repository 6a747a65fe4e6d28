"""Seed replicates of ``sdkd reproduce --seeds N``: layout, mean ± sample std, the "better" rule and the table."""

import math
import statistics
from pathlib import Path

import pytest

from sdkd.reproduce import COLUMNS, format_results
from sdkd.seed_stats import better_than_student, is_better, mean_std, replicate_seeds, seed_dir, summarize


def test_replicate_layout_keeps_the_single_seed_folder():
    assert seed_dir("runs/x", 1) == Path("runs/x")  # a finished single-seed run is replicate 1
    assert seed_dir("runs/x", 3) == Path("runs/x/seed3")
    assert replicate_seeds(42, 3) == [42, 43, 44]
    with pytest.raises(ValueError, match="at least 1"):
        replicate_seeds(42, 0)


def test_mean_std_is_the_sample_std():
    values = [0.010, 0.012, 0.017]
    mean, std = mean_std(values)
    assert mean == pytest.approx(statistics.mean(values)) and std == pytest.approx(statistics.stdev(values))
    assert std > statistics.pstdev(values)  # N - 1, not N
    one = mean_std([0.5])
    assert one[0] == 0.5 and math.isnan(one[1])
    assert math.isnan(mean_std([1.0, math.nan])[0])


def test_summarize_per_stage_and_metric():
    per_seed = [{"s": {"mse": 1.0, "mae": 2.0}}, {"s": {"mse": 3.0, "mae": 2.0, "extra": 1.0}}]
    mean, std = summarize(per_seed)
    assert mean == {"s": {"mse": 2.0, "mae": 2.0}}  # a metric only one replicate has is left out
    assert std["s"]["mse"] == pytest.approx(math.sqrt(2.0)) and std["s"]["mae"] == 0.0
    with pytest.raises(ValueError, match="different stages"):
        summarize([{"a": {}}, {"b": {}}])


@pytest.mark.parametrize(
    ("student", "row", "want"),
    [
        ((0.010, 0.001), (0.008, 0.001), True),  # 0.002 apart, spread 0.001
        ((0.010, 0.001), (0.008, 0.0025), False),  # the row's own spread covers the gap
        ((0.010, 0.003), (0.008, 0.001), False),  # the student's spread covers the gap
        ((1.0, 0.25), (0.75, 0.25), False),  # exactly one std apart is not more than the spread
        ((0.010, 0.001), (0.012, 0.001), False),  # worse
        ((0.010, math.nan), (0.008, math.nan), None),  # one seed: not judged
    ],
)
def test_better_rule_on_hand_made_rows(student, row, want):
    assert is_better(student, row) is want


def _row(mse: float, **extra: float) -> dict[str, float]:
    row = {c: 0.5 for c in COLUMNS}
    row.update(mse=mse, params=4.84e5, improvement_pct=0.0, improvement_se=1.0, **extra)
    return row


def test_table_shows_mean_and_std_and_better():
    roles = {"t1": "teacher", "student": "student", "spectralkd": "distill", "aver": "distill"}
    mean = {"t1": _row(0.009), "student": _row(0.010), "spectralkd": _row(0.008), "aver": _row(0.0095)}
    std = {s: {c: 0.0002 for c in COLUMNS} for s in mean}
    std["spectralkd"]["improvement_pct"] = 2.5
    better = better_than_student(mean, std, roles)
    assert better == {"t1": None, "student": None, "spectralkd": True, "aver": True}
    std["aver"]["mse"] = 0.001  # the spread of this row now covers its 0.0005 gain
    better = better_than_student(mean, std, roles)
    assert better["aver"] is False
    md = format_results(mean, "unet", roles, std, better).splitlines()
    assert md[0].endswith("| better |")
    cells = {line.split(" | ")[0][2:]: line.split(" | ") for line in md[2:]}
    kd, aver, teacher = cells["+SpectralKD (T1)"], cells["+AVER-MKD (w SpectralKD)"], cells["T1: ST-AlterNet"]
    mse = 1 + COLUMNS.index("mse")
    assert kd[mse] == "0.0080 ± 2.000e-04" and aver[mse] == "0.0095 ± 0.0010"
    assert kd[1 + COLUMNS.index("params")] == "0.484 M"  # a size, not a metric: no spread
    assert kd[1 + COLUMNS.index("improvement_pct")] == "+0.0% ± 2.5%"
    assert kd[-1] == "**yes** |" and aver[-1] == "no |" and teacher[-1] == "— |"
    assert teacher[1 + COLUMNS.index("improvement_pct")] == "—"
    # one seed: today's table, no spread and no verdict column
    single = format_results(mean, "unet", roles)
    assert "±" not in single.replace("±1.0%", "") and "better" not in single


def test_one_seed_for_every_replicate_is_refused(tmp_path):
    from sdkd.reproduce import run_reproduce

    with pytest.raises(ValueError, match="--seed BASE"):
        run_reproduce("ns", "smoke", tmp_path / "out", seeds=2, overrides=("seed=7",), log=lambda _m: None)
    assert not (tmp_path / "out").exists()  # refused before anything is made
