"""The config schema (sdkd.train.schema): every value checked by type and range before any data is made,
errors that name the key, the value and what is allowed, choices read from the registries."""

import subprocess
import sys

import numpy as np
import pytest

from sdkd.cli import console_main, main
from sdkd.train import DEFAULTS, ConfigError, build_config
from sdkd.train.config import FREE_FORM
from sdkd.train.schema import SCHEMA


@pytest.fixture
def no_data(monkeypatch):
    """Any data loading or generation fails the test: the checks under test must come before it."""

    def forbidden(*args, **kwargs):
        raise AssertionError("data was loaded or generated before the config was checked")

    monkeypatch.setattr("sdkd.train.run.build_datasets", forbidden)
    monkeypatch.setattr("sdkd.data.navier_stokes.load_or_generate", forbidden)


def _leaf_keys(section, prefix=()):
    for key, value in section.items():
        here = (*prefix, key)
        if isinstance(value, dict) and here not in FREE_FORM:
            yield from _leaf_keys(value, here)
        elif here not in FREE_FORM:
            yield ".".join(here)


def test_every_value_key_has_a_rule():
    """One schema for the whole config: each non-free-form key of DEFAULTS has exactly one rule."""
    assert set(SCHEMA) == set(_leaf_keys(DEFAULTS))


# (override, the allowed values the one-line error must state). Each was accepted, or failed late and vaguely.
BAD = [
    ("train.max_steps_per_epoch=-1", "an integer >= 1, or null"),  # trained nothing, rc 0
    ("train.max_steps_per_epoch=0", "an integer >= 1, or null"),
    ("train.amp=maybe", "true or false"),
    ("train.amp=1", "true or false"),
    ("train.progress=yes please", "true or false"),
    ("train.deterministic=0", "true or false"),
    ("train.epochs=true", "an integer >= 1"),
    ("train.epochs=2.5", "an integer >= 1"),
    ("train.warmup_epochs=-5", "an integer >= 0"),
    ("train.patience=abc", "an integer >= 0"),
    ("train.patience=-1", "an integer >= 0"),
    ("seed=abc", "an integer >= 0"),
    ("seed=-3", "an integer >= 0"),
    ("train.lr=0", "a finite number > 0"),
    ("train.lr=-1e-3", "a finite number > 0"),
    ("train.lr=.nan", "a finite number > 0"),
    ("train.weight_decay=-0.1", "a finite number >= 0"),
    ("train.clip_grad=.inf", "a finite number >= 0"),
    ("train.scheduler=step", "one of cosine, none, onecycle"),
    ("data.batch_size=0", "an integer >= 1"),
    ("data.batch_size=true", "an integer >= 1"),
    ("data.num_workers=-1", "an integer >= 0"),
    ("data.input_frames=0", "an integer >= 1"),
    ("data.output_frames=ten", "an integer >= 1"),
    ("data.name=mnist", "one of array, ns, ns_mat, rbc, taxibj, weatherbench"),
    ("data.preset=huge", "one of fno, small, tiny"),
    ("data.variables=[1, 2]", "null, a name or a non-empty list of names"),
    ("out_dir=''", "a non-empty string"),
    ("model.name=vit", "one of mixer, resnet, simvp, st_alternet, unet"),
    ("stage=eval", "one of distill, train"),
    ("distill.feature_loss=bogus", "one of ab, at, mse, spectral"),
    ("distill.strategy=best", "one of a2d, aver, camkd, single"),
    ("distill.grad_space=input", "one of output, params"),
    ("distill.lam=-1", "a finite number >= 0"),
    ("distill.feature_lam=x", "a finite number >= 0"),
    ("distill.C=0", "a finite number > 0 and <= 1"),
    ("distill.C=1.5", "a finite number > 0 and <= 1"),
    ("distill.per_sample=maybe", "true or false"),
    ("distill.cache=2", "true or false"),
]


@pytest.mark.parametrize("override, allowed", BAD, ids=[b[0] for b in BAD])
def test_bad_values_fail_before_any_data_naming_key_value_and_what_is_allowed(no_data, override, allowed):
    key, raw = override.split("=", 1)
    with pytest.raises(ConfigError) as exc:
        main(["train", "train.progress=false", override])
    msg = str(exc.value)
    assert msg.startswith(f"config key {key}: got ") and f"; expected {allowed}" in msg, msg
    assert "\n" not in msg


def test_the_cli_says_it_in_one_line_with_exit_code_2(no_data, capsys):
    assert console_main(["train", "train.max_steps_per_epoch=-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err == "sdkd: error: config key train.max_steps_per_epoch: got -1; expected an integer >= 1, or null "
        "(every batch of the epoch)"
    )


def test_bad_values_in_a_yaml_file_name_the_file(tmp_path, no_data):
    path = tmp_path / "exp.yaml"
    path.write_text("train:\n  amp: maybe\n")
    with pytest.raises(ConfigError, match=r"config key train.amp: got 'maybe'; expected true or false"):
        build_config([path])


def test_values_are_normalised():
    """YAML 1.1 reads 1e3 and 3e-4 as strings; integral floats are integers for integer keys."""
    cfg = build_config([], ["train.max_steps_per_epoch=1e3", "train.lr=3e-4", "seed=7.0", "out_dir=2024"])
    assert cfg["train"]["max_steps_per_epoch"] == 1000 and type(cfg["train"]["max_steps_per_epoch"]) is int
    assert cfg["train"]["lr"] == 3e-4 and cfg["seed"] == 7 and type(cfg["seed"]) is int
    assert cfg["out_dir"] == "2024"
    cfg = build_config(base={"train": {"max_steps_per_epoch": "2e1", "epochs": "3"}})  # as YAML 1.1 reads them
    assert (cfg["train"]["max_steps_per_epoch"], cfg["train"]["epochs"]) == (20, 3)
    assert build_config()["train"]["max_steps_per_epoch"] is None  # null: every batch


def test_relations_between_keys(no_data, tmp_path):
    with pytest.raises(ConfigError, match=r"train.warmup_epochs: got 2, but warm-up is part of the cosine schedule"):
        build_config([], ["train.warmup_epochs=2"])
    with pytest.raises(ConfigError, match=r"train.warmup_epochs: got 5; expected fewer than train.epochs \(5\)"):
        build_config([], ["train.scheduler=cosine", "train.epochs=5", "train.warmup_epochs=5"])
    build_config([], ["train.scheduler=cosine", "train.epochs=5", "train.warmup_epochs=1"])
    with pytest.raises(ConfigError, match=r"config key data.path: required for data.name='taxibj'"):
        build_config([], ["data.name=taxibj"])
    with pytest.raises(ConfigError, match=r"config key data.preset: got 'fno'; expected one of "):
        build_config([], ["data.name=rbc", "data.preset=fno"])  # each dataset kind has its own presets
    with pytest.raises(ConfigError, match=r"config key data.splits: splits must have 3 entries"):
        build_config([], ["data.splits=[0.8, 0.2]"])
    with pytest.raises(ConfigError, match=r"config key data.splits: split fractions .* sum to at most 1"):
        build_config([], ["data.splits=[0.8, 0.2, 0.2]"])
    teachers = [tmp_path / "a.pt", tmp_path / "b.pt"]
    for t in teachers:
        t.write_bytes(b"not read: the config fails first")
    distill = ["stage=distill", f"distill.teachers=[{teachers[0]}, {teachers[1]}]"]
    with pytest.raises(ConfigError, match=r"distill: C: the capped simplex .* is empty for C=0.4 and M=2"):
        main(["distill", *distill, "distill.strategy=a2d", "distill.C=0.4"])
    with pytest.raises(ConfigError, match=r"distill: strategy='single' needs exactly one teacher, got 2"):
        main(["distill", *distill, "distill.strategy=single"])
    with pytest.raises(ConfigError, match=r"distill.per_sample=true needs distill.grad_space=output"):
        main(["distill", *distill, "distill.strategy=a2d", "distill.grad_space=params", "distill.per_sample=true"])
    with pytest.raises(ConfigError, match=r"distill.features is set but distill.feature_lam is 0"):
        main(["distill", *distill, "distill.strategy=aver", "distill.features={enc: latent}"])


@pytest.mark.parametrize(
    "kd, match",
    [
        ("distill.kd.cutoffs=0.8", r"distill.kd: SpectralKD: cutoffs must be >= 0 and < sqrt\(0.5\)"),
        ("distill.kd.cutoffs=true", r"distill.kd: SpectralKD: cutoffs must be numbers .*\(a bool\)"),
        ("distill.kd.cutoffs=[0.3, 0.2]", r"distill.kd: SpectralKD: cutoffs must be strictly increasing"),
    ],
)
def test_kd_cutoffs_that_empty_a_band_fail_before_any_data(no_data, tmp_path, kd, match):
    teacher = tmp_path / "t.pt"
    teacher.write_bytes(b"not read: the config fails first")
    with pytest.raises(ConfigError, match=match):
        main(["distill", "--teacher", str(teacher), kd])


def test_kd_cutoffs_are_checked_against_the_data_grid_before_teachers_run(tmp_path):
    """On a 4x4 grid no bin lies in (0.26, 0.3]: refused once the data's grid is known, before the teacher file is
    even opened (here it is not a checkpoint at all)."""
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((40, 1, 4, 4)).astype(np.float32))
    teacher = tmp_path / "t.pt"
    teacher.write_bytes(b"never opened")
    argv = ["distill", "--teacher", str(teacher), "data.name=array", f"data.path={tmp_path / 'x.npy'}"]
    argv += ["data.input_frames=2", "data.output_frames=1", f"out_dir={tmp_path / 'run'}", "train.progress=false"]
    with pytest.raises(ConfigError, match=r"distill.kd: SpectralKD: cutoffs \(0.26, 0.3\) leave band 1 .* 4x4 grid"):
        main([*argv, "distill.kd.cutoffs=[0.26, 0.3]"])


def test_run_stage_checks_a_config_changed_by_hand(no_data, tmp_path):
    """run_stage is public: a config edited after build_config is checked again, before any data."""
    from sdkd.train.run import run_stage

    cfg = build_config([], [f"out_dir={tmp_path}"])
    cfg["train"]["max_steps_per_epoch"] = -1
    with pytest.raises(ConfigError, match=r"config key train.max_steps_per_epoch: got -1"):
        run_stage(cfg, device="cpu")
    cfg["train"]["max_steps_per_epoch"] = None
    cfg["distill"]["feature_loss"] = "cosine"
    with pytest.raises(ConfigError, match=r"config key distill.feature_loss: got 'cosine'"):
        run_stage(cfg, device="cpu")


def test_trainer_checks_its_train_section():
    """The Trainer API takes the train section directly: max_steps_per_epoch=-1 must not train nothing."""
    import torch
    from torch.utils.data import TensorDataset

    from sdkd.train import Trainer

    data = TensorDataset(torch.randn(8, 1, 1, 4, 4), torch.randn(8, 1, 1, 4, 4))
    cfg = {"epochs": 1, "lr": 1e-3, "max_steps_per_epoch": -1}
    with pytest.raises(ConfigError, match=r"config key train.max_steps_per_epoch: got -1"):
        Trainer(torch.nn.Identity(), data, data, cfg, "unused", batch_size=4, device="cpu")


def test_choices_come_from_the_registries(monkeypatch, no_data):
    """A loss or preset added to its registry is valid in configs without touching the schema."""
    from sdkd.data import navier_stokes
    from sdkd.losses import feature_kd

    monkeypatch.setitem(feature_kd.FEATURE_LOSSES, "hint", feature_kd.FEATURE_LOSSES["mse"])
    monkeypatch.setitem(navier_stokes.PRESETS, "mini", dict(navier_stokes.PRESETS["tiny"]))
    cfg = build_config([], ["distill.feature_loss=hint", "data.preset=mini"])
    assert (cfg["distill"]["feature_loss"], cfg["data"]["preset"]) == ("hint", "mini")
    with pytest.raises(ConfigError, match="one of ab, at, hint, mse, spectral"):
        build_config([], ["distill.feature_loss=bogus"])


def test_build_config_does_not_import_torch_before_checking_the_values():
    """`sdkd train --help` stays cheap; checking is what pulls in the registries (and torch), not importing."""
    code = "import sys; import sdkd.train.config, sdkd.train.schema; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
