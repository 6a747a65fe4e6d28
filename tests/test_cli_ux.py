"""The CLI as a new user meets it: packaged configs by name from any folder (``sdkd configs``), a help text for
every option, and the small gaps of issue 21 item 12 (presets, output folder, readable reproduce lines)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from sdkd.cli import _build, console_main, main
from sdkd.config_files import ConfigNotFoundError, list_configs, resolve_config
from sdkd.train import ConfigError, build_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


# ----------------------------------------------------------------------------- packaged configs
def test_packaged_config_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here
    cfg = build_config(["nse/teacher"], ["data.preset=small"])
    assert cfg["model"]["name"] == "st_alternet" and cfg["out_dir"] == "runs/nse/teacher"
    assert resolve_config("nse/teacher").read_text() == (CONFIGS / "nse" / "teacher.yaml").read_text()


def test_a_missing_path_names_the_packaged_config_and_is_never_replaced(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigNotFoundError, match=r"'configs/nse/teacher.yaml' does not exist.*`--config nse/teacher`"):
        resolve_config("configs/nse/teacher.yaml")  # the README's old spelling, outside the checkout
    with pytest.raises(ConfigError, match=r"packaged configs \(`--config NAME`\): nse/baseline, .*nse/teacher"):
        build_config(["nse/teachr"])
    # a local file is always the file given, even when a packaged config has the same name
    (tmp_path / "nse").mkdir()
    (tmp_path / "nse" / "teacher.yaml").write_text("model: {name: resnet, cfg: {}}\n")
    assert build_config(["nse/teacher.yaml"])["model"]["name"] == "resnet"


def test_missing_config_is_one_line_on_the_console(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert console_main(["train", "--config", "configs/nse/teacher.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sdkd: error: config file") and "sdkd configs" in err


def test_sdkd_configs_lists_every_packaged_file_and_shows_one(capsys):
    expected = sorted(p.relative_to(CONFIGS).with_suffix("").as_posix() for p in CONFIGS.glob("*/*.yaml"))
    assert sorted(list_configs(include_models=True)) == expected
    assert main(["configs"]) == 0
    out = capsys.readouterr().out
    for name in expected:
        assert name in out
    assert "Stage 1 on Navier-Stokes" in out  # each line says what the config is
    assert main(["configs", "show", "nse/distill"]) == 0
    assert capsys.readouterr().out == (CONFIGS / "nse" / "distill.yaml").read_text()
    assert console_main(["configs", "show", "nse/nope"]) == 2
    assert "no packaged config 'nse/nope'; choose from" in capsys.readouterr().err


def test_configs_dir_override_is_what_an_installed_copy_sees(tmp_path, monkeypatch, capsys):
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "run.yaml").write_text("# A toy run.\nmodel: {name: mixer, cfg: {}}\n")
    monkeypatch.setenv("SDKD_CONFIG_DIR", str(tmp_path))
    assert list(list_configs()) == ["toy/run"]
    assert build_config(["toy/run"])["model"]["name"] == "mixer"
    main(["configs"])
    assert "toy/run  A toy run." in capsys.readouterr().out


def test_installed_package_carries_every_config():
    """setup.py's package data globs must match the configs folder's layout (one level of subfolders)."""
    text = (CONFIGS.parent / "setup.py").read_text()
    assert '"*/*.yaml"' in text and all(p.parent.parent == CONFIGS for p in CONFIGS.rglob("*.yaml"))


# ----------------------------------------------------------------------------- help texts
def _actions(name: str, parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _actions(f"{name} {sub_name}", sub)
        else:
            yield name, parser, action


def test_every_command_and_option_is_described():
    _, subparsers = _build()
    missing = [
        f"sdkd {name} {action.option_strings or action.dest}"
        for command, sub in subparsers.items()
        for name, _, action in _actions(command, sub)
        if not action.help and action.dest != "help"
    ]
    missing += [
        f"sdkd {name}: no description"
        for c, s in subparsers.items()
        for name, p, _ in _actions(c, s)
        if not p.description
    ]
    assert not missing, missing


def test_data_presets_offered_are_the_generators():
    from sdkd.data.cli import PRESET_NAMES
    from sdkd.data.navier_stokes import PRESETS

    assert sorted(PRESET_NAMES) == sorted(PRESETS)
    r = subprocess.run([sys.executable, "-m", "sdkd.cli", "data", "ns", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "{tiny,small,fno}" in r.stdout and "cached on disk" in r.stdout


# ----------------------------------------------------------------------------- output lines
def test_train_names_its_output_folder_before_it_starts(monkeypatch, capsys, tmp_path):
    seen = []

    def fake_run_stage(cfg, resume=False, device=None, **_):
        seen.append(capsys.readouterr().out)  # what was printed before training began
        raise KeyboardInterrupt

    monkeypatch.setattr("sdkd.train.run.run_stage", fake_run_stage)
    with pytest.raises(KeyboardInterrupt):
        main(["train", f"out_dir={tmp_path / 'here'}"])
    assert f"sdkd train: output folder {tmp_path / 'here'}" in seen[0]


def test_reproduce_describes_its_data_in_words():
    from sdkd.reproduce import describe_data, stage_configs

    cfg = build_config([], ["data.preset=tiny", "data.batch_size=4"])
    assert describe_data(cfg["data"]) == "ns preset 'tiny', 10 -> 10 frames, batch 4"
    cfg = build_config([], ["data.name=array", "data.path=/d/rbc.npy", "data.input_frames=3", "data.output_frames=5"])
    assert describe_data(cfg["data"]) == "array /d/rbc.npy, 3 -> 5 frames, batch 16"
    rbc = stage_configs("rbc", "cpu", "/runs/x")["t1"]["data"]  # generated: the preset, not "None"
    assert describe_data(rbc) == "rbc preset 'small', 13 -> 12 frames, batch 8"


def test_a_closed_pipe_ends_quietly():
    """``sdkd configs | head -1``: the reader leaves early; no 'Broken pipe' error line, no traceback."""
    import subprocess
    import sys

    p = subprocess.Popen(
        [sys.executable, "-c", "import sys; from sdkd.cli import console_main; sys.exit(console_main(['configs']))"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    p.stdout.readline()
    p.stdout.close()  # as `head -1` does
    err = p.stderr.read().decode()
    p.wait(timeout=60)
    assert "Broken pipe" not in err and "Traceback" not in err, err
