"""Every shipped experiment config parses against the schema (unknown keys would be errors)."""

from pathlib import Path

import pytest

from sdkd.train import build_config

CONFIGS = sorted(
    p for p in (Path(__file__).resolve().parents[1] / "configs").glob("*/*.yaml") if p.parent.name != "models"
)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_config_is_valid(path):
    cfg = build_config([path])
    assert cfg["stage"] == ("distill" if path.stem == "distill" else "train")
    assert cfg["out_dir"].startswith("runs/")


def test_every_dataset_has_the_three_stages():
    datasets = {p.parent.name for p in CONFIGS}
    assert {"nse", "weatherbench", "taxibj", "rbc"} <= datasets
    for d in datasets:
        assert {p.stem for p in CONFIGS if p.parent.name == d} >= {"teacher", "baseline", "distill"}
