"""The README's results summary and docs/results.md say the same thing, and both match the recorded runs."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNS = {  # "Across students" row label -> the run folder its numbers come from
    "NSE, U-Net": "ns-cpu-unet-3seeds",
    "NSE, ResNet": "ns-cpu-resnet-3seeds",
    "NSE, MLP-Mixer": "ns-cpu-mixer-3seeds",
    "RBC, U-Net": "rbc-cpu-unet-3seeds",
    "RBC, ResNet": "rbc-cpu-resnet-3seeds",
}


def _across_rows(text: str) -> dict[str, str]:
    return {m.group(1): m.group(0) for m in re.finditer(r"^\| ((?:NSE|RBC), [\w-]+) \(.*$", text, re.M)}


def test_readme_summary_table_is_the_one_in_docs_results():
    readme = _across_rows((ROOT / "README.md").read_text(encoding="utf-8"))
    docs = _across_rows((ROOT / "docs" / "results.md").read_text(encoding="utf-8"))
    assert set(readme) == set(RUNS) and readme == docs


@pytest.mark.parametrize("label", sorted(RUNS))
def test_summary_numbers_come_from_the_recorded_run(label):
    data = json.loads((ROOT / "docs" / "results" / RUNS[label] / "results.json").read_text(encoding="utf-8"))
    rows, std, better = data["rows"], data["std"], data["better"]
    assert len(data["seeds"]) == 3
    cells = [c.strip() for c in _across_rows((ROOT / "README.md").read_text(encoding="utf-8"))[label].split("|")[1:-1]]

    def gain(stage: str) -> str:
        mark = " ✓" if better[stage] else ""
        return f"{rows[stage]['improvement_pct']:+.1f} ± {std[stage]['improvement_pct']:.1f} %{mark}".replace("-", "−")

    assert cells[2] == gain("spectralkd")
    assert cells[3].startswith(gain(max(("spectralkd", "aver", "a2d_mse", "a2d_spectralkd", "camkd", "single_van"),
                                        key=lambda s: rows[s]["improvement_pct"])))  # fmt: skip
    assert [cells[4], cells[5], cells[6], cells[7]] == [gain(s) for s in ("camkd", "spectralkd_latent", "at", "a2d_ab")]
