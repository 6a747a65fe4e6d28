"""Students have <= 1/5 of every teacher's parameters (DESIGN.md section 4, issue 19): in every dataset
preset, in every ``sdkd reproduce`` budget on every dataset, and in every ``sdkd demo`` budget."""

import pytest

from sdkd.models import build_model, build_preset, list_presets
from sdkd.models.summary import count_parameters

STUDENTS = ("unet", "resnet", "mixer")
MAX_RATIO = 0.2


def _in_shape(cfg):
    from sdkd.data.navier_stokes import PRESETS

    d = cfg["data"]
    if d["name"] == "ns":
        r = int(PRESETS[d["preset"]]["resolution"])
        return (d["input_frames"], 1, r, r), d["output_frames"]
    return None, d["output_frames"]


@pytest.mark.parametrize("dataset", list_presets())
def test_preset_students_are_at_most_a_fifth_of_every_preset_teacher(dataset):
    teachers = {
        "st_alternet": build_preset(dataset, "st_alternet"),
        "simvp": build_preset(dataset, "simvp"),
        "simvp-van": build_preset(dataset, "simvp", translator="van"),
    }
    smallest = min(count_parameters(m) for m in teachers.values())
    for name in STUDENTS:
        n = count_parameters(build_preset(dataset, name))
        assert n <= MAX_RATIO * smallest, f"{dataset}: {name} has {n} params, smallest teacher {smallest}"


@pytest.mark.parametrize("budget", ["smoke", "cpu"])
@pytest.mark.parametrize(
    "dataset", ["ns", "rbc", "weatherbench", "weatherbench_12h", "taxibj", "taxibj_plus", "taxibj_plus_30min"]
)
def test_reproduce_students_are_at_most_a_fifth_of_every_teacher(dataset, budget, tmp_path):
    from sdkd.models.presets import load_model_config
    from sdkd.reproduce import DATASETS, stage_configs

    def size(cfg):
        return count_parameters(build_model(cfg["model"]["name"], in_shape, t_out, **cfg["model"]["cfg"]))

    path = None if dataset == "ns" else "x"
    cfgs = {s: stage_configs(dataset, budget, tmp_path, student=s, data_path=path) for s in STUDENTS}
    in_shape, t_out = _in_shape(cfgs["unet"]["t1"])
    if in_shape is None:  # file data: the preset's grid (Table 2); smoke runs on tiny files (CI)
        in_shape = load_model_config(DATASETS[dataset][1], "unet")["in_shape"]
        if budget == "smoke":
            in_shape = (*in_shape[:2], 16, 16)
    teachers = {s: size(c) for s, c in cfgs["unet"].items() if c["stage"] == "train" and s != "student"}
    assert set(teachers) == {"t1", "t2", "t_van"}
    for student in STUDENTS:
        n = size(cfgs[student]["student"])
        assert n <= MAX_RATIO * min(teachers.values()), (student, n, teachers)


def test_reproduce_paper_budget_uses_the_preset_models(tmp_path):
    """The paper budget trains the preset teachers and students, checked by the preset test above."""
    from sdkd.models.presets import load_model_config
    from sdkd.reproduce import DATASETS, stage_configs

    for dataset, (_, preset) in DATASETS.items():
        for student in STUDENTS:
            cfgs = stage_configs(dataset, "paper", tmp_path, student=student, data_path="x")
            assert cfgs["student"]["model"] == {"name": student, "cfg": load_model_config(preset, student)["cfg"]}
        simvp = load_model_config(preset, "simvp")["cfg"]
        assert cfgs["t1"]["model"] == {"name": "st_alternet", "cfg": load_model_config(preset, "st_alternet")["cfg"]}
        assert cfgs["t2"]["model"] == {"name": "simvp", "cfg": simvp}
        assert cfgs["t_van"]["model"] == {"name": "simvp", "cfg": {**simvp, "translator": "van"}}


@pytest.mark.parametrize("budget", ["smoke", "small", "medium"])
def test_demo_student_is_at_most_a_fifth_of_its_teacher(budget, tmp_path):
    from sdkd.train.demo import stage_configs

    cfgs = stage_configs(budget, tmp_path, seed=42)
    in_shape, t_out = _in_shape(cfgs["teacher"])
    n = {
        k: count_parameters(build_model(c["model"]["name"], in_shape, t_out, **c["model"]["cfg"]))
        for k, c in cfgs.items()
    }
    assert n["baseline"] == n["distilled"] <= MAX_RATIO * n["teacher"], n
