"""Every shipped experiment config parses against the schema (unknown keys would be errors)."""

import json
from pathlib import Path

import pytest

from sdkd.train import ConfigError, build_config

CONFIGS = sorted(
    p for p in (Path(__file__).resolve().parents[1] / "configs").glob("*/*.yaml") if p.parent.name != "models"
)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_config_is_valid(path):
    cfg = build_config([path])
    assert cfg["stage"] == ("distill" if path.stem.startswith("distill") else "train")
    assert cfg["out_dir"].startswith("runs/")


def test_every_dataset_has_the_three_stages():
    datasets = {p.parent.name for p in CONFIGS}
    assert {"nse", "weatherbench", "taxibj", "rbc"} <= datasets
    for d in datasets:
        assert {p.stem for p in CONFIGS if p.parent.name == d} >= {"teacher", "baseline", "distill"}


# ------------------------------------------------------------------------- up-front checks of free-form sections
MODEL_PRESETS = sorted((Path(__file__).resolve().parents[1] / "configs" / "models").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_config_passes_the_up_front_checks(path):
    from sdkd.train.run import check_free_form

    cfg = build_config([path])
    check_free_form(cfg)
    check_free_form({**cfg, "stage": "distill"})  # the kd section too, also in teacher/baseline configs


@pytest.mark.parametrize("path", MODEL_PRESETS, ids=lambda p: p.name)
def test_model_presets_pass_the_model_config_check(path):
    import yaml

    from sdkd.models import check_model_config

    data = yaml.safe_load(path.read_text())
    models = {**(data.get("teachers") or {}), **(data.get("students") or {})}
    assert models
    for name, cfg in models.items():
        check_model_config(name, cfg or {})
        build_config([], [f"model.name={name}", *(f"model.cfg.{k}={json.dumps(v)}" for k, v in (cfg or {}).items())])


def test_every_model_declares_the_keys_its_builder_accepts():
    from sdkd.models import build_model, check_model_config, config_keys, list_models

    for name in list_models():
        keys = config_keys(name)
        assert keys, name  # declared, so typos are caught up front
        with pytest.raises(TypeError, match="widht"):
            check_model_config(name, {"widht": 3})
        with pytest.raises(TypeError, match="widht"):
            build_model(name, (2, 1, 8, 8), 2, widht=3)  # the builder rejects it too: the two agree
        for key in keys:  # each declared key is a real argument of the builder
            try:
                build_model(name, (2, 1, 8, 8), 2, **{key: object()})
            except Exception as exc:  # the bad value may fail, but never as an unknown key
                assert "unexpected keyword" not in str(exc) and "unknown config key" not in str(exc), (name, key)


def test_typos_in_free_form_sections_fail_in_build_config():
    with pytest.raises(
        ConfigError, match=r"^distill.kd: SpectralKD.__init__\(\) got an unexpected keyword argument 'alpah'$"
    ):
        build_config([], ["stage=distill", "distill.teachers=[t.pt]", "distill.kd.alpah=2"])
    with pytest.raises(ConfigError, match=r"^distill.kd.type must be"):
        build_config([], ["stage=distill", "distill.teachers=[t.pt]", "distill.kd.type=spectal"])
    with pytest.raises(ConfigError, match=r"^model.cfg: model 'unet' has no config key\(s\) \['widht'\]; valid keys"):
        build_config([], ["model.cfg.widht=3"])
    with pytest.raises(ConfigError, match=r"^model.cfg: model 'simvp' has no config key\(s\) \['hidS'\]"):
        build_config([], ["model.name=simvp", "model.cfg.hidS=3"])
    with pytest.raises(ConfigError, match=r"^config key model.name: got 'unte'; expected one of .*simvp.*unet"):
        build_config([], ["model.name=unte"])
    with pytest.raises(ConfigError, match="model.cfg must be a mapping"):
        build_config([], ["model.cfg=3"])
    with pytest.raises(
        ConfigError, match="config key distill.teachers: got 't.pt'; expected a list of checkpoint paths"
    ):
        build_config([], ["stage=distill", "distill.teachers=t.pt"])
