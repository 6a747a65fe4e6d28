"""Any nn.Module as teacher or student: feature taps by module path (forward hooks), teachers from a
plain state_dict plus a model spec, students by import path — through the Python API and a config."""

import numpy as np
import pytest
import torch
from torch import nn

from sdkd.distill import Distiller, IndexedDataset, TeacherCache
from sdkd.distill.taps import forward_with_features
from sdkd.models import build_model
from sdkd.train import CheckpointError, ConfigError, build_config
from sdkd.train.run import load_model, run_stage

T, C, H, W = 3, 1, 8, 8


class ForeignNet(nn.Module):
    """A third-party-style forecaster: prediction-only ``forward(x)``, nested submodules, its own arguments."""

    def __init__(self, frames: int = T, channels: int = C, hidden: int = 6):
        super().__init__()
        self.frames, self.channels = frames, channels
        self.encoder = nn.Sequential(nn.Conv2d(frames * channels, hidden, 3, padding=1), nn.GELU())
        self.body = nn.ModuleDict({"mix": nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=1), nn.Tanh())})
        self.head = nn.Conv2d(hidden, frames * channels, 1)

    def forward(self, x):
        b = x.shape[0]
        z = self.encoder(x.reshape(b, -1, *x.shape[-2:]))
        z = z + self.body["mix"](z)
        return self.head(z).reshape(b, self.frames, self.channels, *x.shape[-2:])


FOREIGN = f"{ForeignNet.__module__}:{ForeignNet.__qualname__}"


def _batch(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, T, C, H, W, generator=g), torch.randn(n, T, C, H, W, generator=g)


def test_hooks_tap_module_outputs_and_leave_nothing_behind():
    torch.manual_seed(0)
    net = ForeignNet()
    x, _ = _batch()
    pred, feats = forward_with_features(net, x, ["body.mix", "encoder.1"], "the student")
    z = net.encoder(x.reshape(4, -1, H, W))
    torch.testing.assert_close(feats["encoder.1"], z)
    torch.testing.assert_close(feats["body.mix"], net.body["mix"](z))
    torch.testing.assert_close(pred, net(x))
    assert all(not m._forward_hooks for m in net.modules())


def test_foreign_student_and_teacher_through_distiller_with_feature_kd():
    torch.manual_seed(0)
    student, teacher = ForeignNet(hidden=6), ForeignNet(hidden=6).eval()
    x, y = _batch()
    d = Distiller(student, teacher, lam=0.0, features={"body.mix": "body.mix"}, feature_lam=1.0)
    out = d(x, y)
    _, fs = forward_with_features(student, x, ["body.mix"])
    with torch.no_grad():
        _, ft = forward_with_features(teacher, x, ["body.mix"])
    torch.testing.assert_close(out.terms["feat/0"], nn.functional.mse_loss(fs["body.mix"], ft["body.mix"]).detach())
    d.backward(out)
    assert student.encoder[0].weight.grad.abs().sum() > 0  # the feature term reaches the student
    assert all(p.grad is None for p in teacher.parameters())


def test_built_in_fast_path_mixes_with_hooks():
    """A built-in teacher keeps return_features (its 'enc'); a module path of it is hooked."""
    torch.manual_seed(0)
    teacher = build_model("unet", (T, C, H, W), T, widths=[4, 6]).eval()
    student = ForeignNet(hidden=6)
    x, y = _batch()
    with torch.no_grad():
        _, own = teacher(x, return_features=True)
    path = next(n for n, m in teacher.named_modules() if isinstance(m, nn.Conv2d))
    with torch.no_grad():
        _, feats = forward_with_features(teacher, x, ["enc", path])
    torch.testing.assert_close(feats["enc"], own["enc"])
    assert feats[path].dim() == 4
    from sdkd.losses import FeatureMSE

    fl = FeatureMSE(student_channels=6, teacher_channels=own["enc"].shape[1])
    d = Distiller(student, teacher, features={"body.mix": "enc"}, feature_loss=fl)
    assert torch.isfinite(d(x, y).loss)


def test_a_path_that_names_no_module_is_one_clear_line_with_close_matches():
    s, t = ForeignNet(), ForeignNet()
    with pytest.raises(KeyError, match=r"the student has no feature\(s\) \['body\.mxi'\].*did you mean 'body\.mix'"):
        Distiller(s, t, features={"body.mxi": "body.mix"})  # caught at construction, before any forward
    with pytest.raises(KeyError, match=r"teachers\[0\] has no feature\(s\) \['encoder\.5'\].*'encoder\.0'"):
        Distiller(s, t, features={"body.mix": "encoder.5"})
    msg = str(pytest.raises(KeyError, Distiller, s, t, features={"body.mix": "nope"}).value)
    assert "\n" not in msg and "module paths (model.named_modules()): encoder, encoder.0" in msg


def test_cache_of_a_foreign_teacher_matches_live_distillation():
    torch.manual_seed(0)
    student, teacher = ForeignNet(), ForeignNet(hidden=6)
    x, y = _batch(6)
    data = torch.utils.data.TensorDataset(x, y)
    cache = TeacherCache.build(teacher, data, features=["body.mix"], batch_size=4)
    idx = torch.tensor([4, 1, 5])
    kw = {"features": {"body.mix": "body.mix"}, "feature_lam": 0.5}
    live = Distiller(student, teacher, **kw)(x[idx], y[idx])
    cached = Distiller(student, None, cache=cache, **kw)(x[idx], y[idx], index=idx)
    for k in live.terms:
        torch.testing.assert_close(cached.terms[k], live.terms[k])
    assert isinstance(IndexedDataset(data)[0][0], int)


# ----------------------------------------------------------------------------- through a config
@pytest.fixture(scope="module")
def waves(tmp_path_factory):
    rng = np.random.default_rng(0)
    arr = rng.standard_normal((12, 2 * T, C, H, W)).astype(np.float32)
    path = tmp_path_factory.mktemp("data") / "waves.npy"
    np.save(path, arr)
    return path


def _cfg(waves, out, **extra):
    base = {
        "stage": "distill",
        "out_dir": str(out),
        "data": {"name": "array", "path": str(waves), "input_frames": T, "output_frames": T, "batch_size": 4},
        "model": {"name": FOREIGN, "cfg": {"hidden": 5}},
        "train": {"epochs": 1, "progress": False, "patience": 0},
    }
    base.update(extra)
    return build_config(base=base)


def test_config_state_dict_teachers_and_an_imported_student(waves, tmp_path):
    torch.manual_seed(0)
    foreign = tmp_path / "foreign.pt"
    torch.save(ForeignNet(hidden=6).state_dict(), foreign)
    unet = tmp_path / "unet.pt"
    torch.save({"state_dict": build_model("unet", (T, C, H, W), T, widths=[4, 6]).state_dict()}, unet)
    teachers = [
        {"checkpoint": str(foreign), "model": {"name": FOREIGN, "cfg": {"hidden": 6}}},
        {"checkpoint": str(unet), "model": {"name": "unet", "cfg": {"widths": [4, 6]}}},
    ]
    d = {"teachers": teachers, "strategy": "aver", "features": [{"body.mix": "body.mix"}, {"body.mix": "enc"}]}
    cfg = _cfg(waves, tmp_path / "run", distill={**d, "feature_lam": 0.5})
    result = run_stage(cfg)
    assert result.epochs_run == 1 and np.isfinite(result.best_val)
    row = result.history[0]
    assert {"train_feat/0", "train_feat/1", "train_kd/0", "train_kd/1"} <= set(row), sorted(row)
    model, ck = load_model(tmp_path / "run" / "best.pt")
    assert isinstance(model, ForeignNet) and model.encoder[0].out_channels == 5
    assert ck["model_spec"]["name"] == FOREIGN and ck["config"]["distill"]["teachers"][0]["checkpoint"] == str(foreign)


def test_config_mistakes_are_one_clear_line(waves, tmp_path):
    good = tmp_path / "t.pt"
    torch.save(ForeignNet().state_dict(), good)
    entry = {"checkpoint": str(good), "model": {"name": FOREIGN}}

    def fails(match, **extra):
        extra.setdefault("distill", {"teachers": [entry]})
        with pytest.raises((ConfigError, CheckpointError), match=match) as info:
            run_stage(_cfg(waves, tmp_path / "r", **extra))
        assert "\n" not in str(info.value)

    fails(r"model\.name: model 'nosuchpkg\.mod:Net': cannot import", model={"name": "nosuchpkg.mod:Net"})
    fails(r"did you mean 'ForeignNet'", model={"name": FOREIGN.replace("ForeignNet", "ForeinNet")})
    fails(r"not an nn\.Module subclass", model={"name": "os:getcwd"})
    fails(r"model\.cfg: .*unexpected keyword argument 'hiden'", model={"name": FOREIGN, "cfg": {"hiden": 4}})
    fails(r"teachers\[0\]\.model\.cfg", distill={"teachers": [{**entry, "model": {"name": "unet", "cfg": {"x": 1}}}]})
    fails(r"teachers\[0\] must be \{checkpoint", distill={"teachers": [{"checkpoint": str(good)}]})
    fails(r"does not exist", distill={"teachers": [{**entry, "checkpoint": str(tmp_path / "missing.pt")}]})
    pickled = tmp_path / "whole.pt"
    torch.save(ForeignNet(), pickled)  # a whole pickled model: never unpickled
    fails(r"refusing to load .*state_dict\(\)", distill={"teachers": [{**entry, "checkpoint": str(pickled)}]})
    fails(
        r"weights do not fit model", distill={"teachers": [{**entry, "model": {"name": FOREIGN, "cfg": {"hidden": 3}}}]}
    )
    fails(
        r"distill\.features: the student has no feature\(s\) \['bdy'\]",
        distill={"teachers": [entry], "features": {"bdy": "body"}, "feature_lam": 1.0},
    )


def test_feature_kd_from_models_sizes_adapters_for_hooked_paths():
    from sdkd.losses import FeatureKD

    torch.manual_seed(0)
    student, teacher = ForeignNet(hidden=4), ForeignNet(hidden=6)
    x, _ = _batch(2)
    kd = FeatureKD.from_models(student, teacher, x, {"body.mix": "encoder.1"})
    _, fs = forward_with_features(student, x, ["body.mix"])
    _, ft = forward_with_features(teacher, x, ["encoder.1"])
    assert torch.isfinite(kd(fs, ft)) and student.training and teacher.training
