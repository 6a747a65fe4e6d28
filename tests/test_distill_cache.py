"""Teacher cache: stored outputs equal live ones, disk layout and reuse, cached == live distillation."""

import gc
import json
import os

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from sdkd.distill import Distiller, IndexedDataset, TeacherCache
from sdkd.distill.cache import fingerprint

N, T, CH, H, W = 10, 2, 1, 8, 8


class TinyNet(nn.Module):
    """(B, T, C, H, W) -> (B, T, C, H, W) with two named features; counts forward calls."""

    def __init__(self, width: int = 4):
        super().__init__()
        self.conv1 = nn.Conv2d(T * CH, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, T * CH, 3, padding=1)
        self.calls = 0

    def forward(self, x, return_features=False):
        self.calls += 1
        b = x.shape[0]
        h = self.conv1(x.reshape(b, T * CH, H, W))
        a = torch.tanh(h)
        out = self.conv2(a).reshape(b, T, CH, H, W)
        return (out, {"hid": h, "act": a}) if return_features else out


class Pairs(Dataset):
    def __init__(self, n=N):
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(n, T, CH, H, W, generator=g)
        self.y = torch.randn(n, T, CH, H, W, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def live(teacher, x):
    with torch.no_grad():
        return teacher(x, return_features=True)


@pytest.mark.parametrize("on_disk", [False, True])
def test_cache_holds_teacher_outputs(tmp_path, on_disk):
    data = Pairs()
    ts = [TinyNet(), TinyNet(width=3)]
    path = tmp_path / "cache" if on_disk else None
    cache = TeacherCache.build(
        ts,
        data,
        features=[["hid"], ["hid", "act"]],
        path=path,
        max_memory_bytes=0 if on_disk else 1 << 30,
        batch_size=3,
    )
    assert len(cache) == N and cache.num_teachers == 2
    assert cache.keys(0) == ("pred", "hid") and cache.keys(1) == ("pred", "hid", "act")
    assert (cache.location == "memory") != on_disk
    idx = torch.tensor([7, 0, 3, 3, 9])
    got = cache[idx]
    for m, t in enumerate(ts):
        pred, feats = live(t, data.x[idx])
        assert torch.allclose(got[m]["pred"], pred, atol=1e-6)
        for k in cache.keys(m)[1:]:
            assert torch.allclose(got[m][k], feats[k], atol=1e-6)
    assert cache.nbytes == N * sum(v[0].numel() * 4 for o in cache[[0]] for v in o.values())
    if on_disk:
        meta = json.loads((path / "meta.json").read_text())
        assert meta["num_samples"] == N and meta["teachers"][1]["act"]["shape"] == [3, H, W]
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftover temp folder
        again = TeacherCache.open(path)
        assert torch.equal(again[idx][1]["act"], got[1]["act"])


@pytest.mark.parametrize("on_disk", [False, True])
def test_teacher_nan_outputs_are_not_cached(tmp_path, on_disk):
    """A teacher that predicts NaN for finite inputs: refused while caching (naming teacher, output and sample),
    nothing is cached, no temporary folder is left behind."""
    data = Pairs()
    broken = TinyNet()
    with torch.no_grad():
        broken.conv2.weight[0, 0, 0, 0] = float("nan")
    path = tmp_path / "cache"
    with pytest.raises(ValueError, match=r"teachers\[1\] output 'pred' holds NaN or inf for training sample 0: "):
        TeacherCache.build(
            [TinyNet(), broken], data, path=path if on_disk else None, max_memory_bytes=0 if on_disk else 1 << 30
        )
    assert not path.exists() and not list(tmp_path.iterdir())


def test_disk_cache_is_reused_only_when_metadata_matches(tmp_path):
    data = Pairs()
    t = TinyNet()
    path = tmp_path / "c"
    TeacherCache.build(t, data, path=path, max_memory_bytes=0)
    calls = t.calls
    c2 = TeacherCache.build(t, data, path=path, max_memory_bytes=0)
    assert t.calls == calls  # reused, teacher not run
    assert torch.allclose(c2[[2]][0]["pred"], live(t, data.x[2:3])[0], atol=1e-6)
    with torch.no_grad():
        t.conv2.bias += 1.0  # different weights -> rebuilt
    c3 = TeacherCache.build(t, data, path=path, max_memory_bytes=0)
    assert t.calls > calls
    assert torch.allclose(c3[[2]][0]["pred"], live(t, data.x[2:3])[0], atol=1e-6)
    calls = t.calls
    TeacherCache.build(t, data, path=path, max_memory_bytes=0, tag="other data")  # tag differs -> rebuilt
    assert t.calls > calls


def test_disk_build_removes_a_killed_builds_folder_but_not_a_live_ones(tmp_path, dead_pid):
    import os

    from sdkd.data import cache as data_cache

    stale = tmp_path / f".c.tmp-{data_cache._HOST}-{dead_pid}-0badc0de"  # a build killed by SIGTERM
    live = tmp_path / f".c.tmp-{data_cache._HOST}-{os.getpid()}-600dc0de"  # a build still running
    for d in (stale, live):
        d.mkdir()
        (d / "t0_0.npy").write_bytes(b"x" * 1000)
    cache = TeacherCache.build(TinyNet(), Pairs(), path=tmp_path / "c", max_memory_bytes=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["c", live.name])
    assert cache.location == str(tmp_path / "c")


def test_fingerprint_covers_buffers():
    t = nn.Sequential(nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2))  # has a 0-dim int64 buffer
    a = fingerprint([t])
    t[1].running_mean += 1
    assert fingerprint([t]) != a


def test_temporary_disk_cache_and_bf16(tmp_path):
    data = Pairs()
    t = TinyNet().to(torch.bfloat16)

    class Cast(Dataset):
        def __len__(self):
            return N

        def __getitem__(self, i):
            return data.x[i].bfloat16(), data.y[i]

    cache = TeacherCache.build(t, Cast(), max_memory_bytes=0)
    assert cache.location != "memory"
    got = cache[[4, 1]][0]["pred"]
    assert got.dtype == torch.bfloat16
    with torch.no_grad():
        ref = t(torch.stack([data.x[4], data.x[1]]).bfloat16())
    assert torch.equal(got, ref)
    folder = cache.location
    del cache, got
    gc.collect()
    assert not os.path.exists(folder)


def test_cache_from_shuffled_indexed_loader_equals_in_order():
    data = Pairs()
    t = TinyNet()
    ordered = TeacherCache.build(t, data)
    loader = DataLoader(IndexedDataset(data), batch_size=4, shuffle=True)
    shuffled = TeacherCache.build(t, loader)
    assert torch.allclose(ordered[:][0]["pred"], shuffled[:][0]["pred"], atol=1e-6)


def test_cache_bad_input():
    data = Pairs()
    t = TinyNet()
    with pytest.raises(TypeError, match="IndexedDataset"):
        TeacherCache.build(t, DataLoader(data, batch_size=4))
    with pytest.raises(KeyError, match="features: teachers\\[0\\] has no feature"):
        TeacherCache.build(t, data, features=["nope"])
    with pytest.raises(ValueError, match="never produced"):
        TeacherCache.build(t, DataLoader(IndexedDataset(data), batch_size=4, drop_last=True))
    cache = TeacherCache.build(t, data)
    with pytest.raises(IndexError, match="indices"):
        cache[[N]]
    with pytest.raises(TypeError, match="indices"):
        cache[torch.tensor([0.5])]
    with pytest.raises(KeyError, match="features: the cache has no feature"):
        Distiller(TinyNet(), cache=cache, features={"hid": "hid"})
    with pytest.raises(ValueError, match="index"):
        Distiller(TinyNet(), t)(data.x[:2], data.y[:2], index=torch.tensor([0, 1]))
    with pytest.raises(FileNotFoundError, match="path"):
        TeacherCache.open("/nonexistent/cache")


@pytest.mark.parametrize(
    "strategy,kw",
    [
        ("single", {}),
        ("single", {"features": {"hid": "hid"}}),
        ("aver", {}),
        ("a2d", {}),
        ("a2d", {"per_sample": True}),
        ("a2d", {"grad_space": "params"}),
        ("camkd", {}),
    ],
)
def test_cached_and_live_distillation_agree(tmp_path, strategy, kw):
    data = Pairs()
    ts = [TinyNet()] if strategy == "single" else [TinyNet(), TinyNet()]
    feats = sorted(set(kw.get("features", {}).values()))
    cache = TeacherCache.build(ts, data, features=feats, path=tmp_path / "c", max_memory_bytes=0, batch_size=4)
    student = TinyNet()
    live_d = Distiller(student, ts, strategy=strategy, **kw)
    cached_d = Distiller(student, strategy=strategy, cache=cache, **kw)
    loader = DataLoader(IndexedDataset(data), batch_size=5, shuffle=True)
    params = list(student.parameters())
    for idx, x, y in loader:
        grads = []
        outs = []
        for d, extra in ((live_d, {}), (cached_d, {"index": idx})):
            student.zero_grad()
            out = d(x, y, **extra)
            d.backward(out)
            outs.append(out)
            grads.append([p.grad.clone() for p in params])
        assert torch.allclose(outs[0].loss, outs[1].loss, atol=1e-6, rtol=1e-6)
        for k in outs[0].terms:
            assert torch.allclose(outs[0].terms[k], outs[1].terms[k], atol=1e-6, rtol=1e-5), k
        for a, b in zip(*grads):
            assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)
