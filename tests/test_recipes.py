"""docs/recipes.md runs as written: its ``<!-- recipe: NAME -->`` blocks are executed in order, in one
namespace (as a reader pastes them one after another), in a temporary folder."""

import importlib.util
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "recipes.md"
BLOCK = re.compile(r"<!-- recipe: (\w+) -->\s*```python\n(.*?)```", re.S)


def _recipes() -> list[tuple[str, str]]:
    return BLOCK.findall(DOC.read_text())


def test_the_page_has_the_recipes_the_readme_promises():
    assert [name for name, _ in _recipes()] == ["plain", "distiller", "lightning", "callback", "foreign"]


def test_recipes_run_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    has_lightning = any(importlib.util.find_spec(m) for m in ("lightning", "pytorch_lightning"))
    ns: dict = {"__name__": "recipes"}
    for name, code in _recipes():
        if name == "lightning" and not has_lightning:
            continue  # tested where Lightning is installed (test_lightning_recipe)
        exec(compile(code, f"{DOC.name}:{name}", "exec"), ns)
    out = capsys.readouterr().out
    assert re.search(r"epoch 2: mean loss \d+\.\d+", out)
    assert "'weight/1'" in out and "'kd/0'" in out
    assert "['encoder', 'encoder.0', 'encoder.1', 'translator', 'translator.mid', 'decoder']" in out
    assert "'feat/0'" in out  # the foreign teacher's hooked feature reached the loss
    step, metrics = ns["rows"][-1]
    assert step == 2 and {"train_loss", "val_mse", "lr", "seconds"} <= set(metrics)
    assert (tmp_path / "runs" / "recipe" / "metrics.csv").is_file()


def test_lightning_recipe(tmp_path, monkeypatch):
    if not any(importlib.util.find_spec(m) for m in ("lightning", "pytorch_lightning")):
        pytest.skip("Lightning is not installed")
    monkeypatch.chdir(tmp_path)
    ns: dict = {"__name__": "recipes"}
    for name, code in _recipes():
        if name in ("plain", "distiller", "lightning"):
            if name == "plain":
                code = code.replace("range(2)", "range(1)")
            exec(compile(code, f"{DOC.name}:{name}", "exec"), ns)
    assert ns["trainer"].state.finished
