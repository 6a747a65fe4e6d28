"""ArrayDataset and the shared windowing/normalisation base (sdkd.data.windows)."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from sdkd.data import ArrayDataset, WindowDataset, resolve_splits


def _series(T=40, C=2, H=6, W=5, seed=0):
    rng = np.random.default_rng(seed)
    return (3.0 + 2.0 * rng.standard_normal((T, C, H, W))).astype(np.float32)


def _write(path, arr, fmt, key="field"):
    if fmt == "npy":
        np.save(path, arr)
    elif fmt == "npz":
        np.savez(path, **{key: arr, "other": np.zeros(3)})
    elif fmt == "pt":
        torch.save(torch.from_numpy(arr), path)
    elif fmt == "pt-dict":
        torch.save({key: torch.from_numpy(arr), "meta": torch.zeros(2)}, path)
    elif fmt == "h5":
        import h5py

        with h5py.File(path, "w") as f:
            f[key] = arr
            f["other"] = np.zeros(3)
    elif fmt == "nc":
        import xarray as xr

        dims = ("time", "channel", "y", "x")[-arr.ndim :] if arr.ndim <= 4 else ("n", "time", "channel", "y", "x")
        xr.Dataset({key: (dims, arr), "other": (("k",), np.zeros(3))}).to_netcdf(path)
    return path


SUFFIX = {"npy": ".npy", "npz": ".npz", "pt": ".pt", "pt-dict": ".pt", "h5": ".h5", "nc": ".nc"}


@pytest.mark.parametrize("fmt", list(SUFFIX))
def test_formats_give_normalised_windows_with_train_stats(tmp_path, fmt):
    arr = _series()
    path = _write(tmp_path / f"data{SUFFIX[fmt]}", arr, fmt)
    variable = None if fmt in ("npy", "pt") else "field"
    kw = dict(variable=variable, input_frames=3, output_frames=2, splits=(0.5, 0.25, 0.25))
    train = ArrayDataset(path, split="train", **kw)
    test = ArrayDataset(path, split="test", **kw)
    m, s = arr[:20].astype(np.float64).mean(), arr[:20].astype(np.float64).std()
    for ds in (train, test):  # scalar statistics of the train rows, repeated per channel
        assert torch.allclose(ds.mean, torch.full((2,), m, dtype=torch.float64))
        assert torch.allclose(ds.std, torch.full((2,), s, dtype=torch.float64))
    assert train.in_shape == (3, 2, 6, 5) and train.out_frames == 2 and test.split == "test"
    assert len(train) == 20 - 5 + 1 and len(test) == 10 - 5 + 1
    x, y = test[2]
    assert x.dtype == torch.float32 and x.shape == (3, 2, 6, 5) and y.shape == (2, 2, 6, 5)
    expected = (arr[30 + 2 : 30 + 7] - m) / s
    assert np.allclose(torch.cat([x, y]).numpy(), expected, atol=1e-5)
    assert torch.allclose(test.denormalize(torch.cat([x, y])), torch.from_numpy(arr[32:37]), atol=1e-5)


def test_time_hw_layout_adds_channel_and_per_channel_stats(tmp_path):
    arr = _series(T=30, C=1)[:, 0]
    ds = ArrayDataset(_write(tmp_path / "a.npy", arr, "npy"), input_frames=2, output_frames=1)
    assert ds.in_shape == (2, 1, 6, 5) and ds.mean.shape == (1,)
    arr4 = _series(T=30, C=3)
    arr4[:, 1] *= 10
    ds = ArrayDataset(_write(tmp_path / "b.npy", arr4, "npy"), input_frames=2, output_frames=1, per_channel=True)
    tr = arr4[:24].astype(np.float64)
    assert np.allclose(ds.mean.numpy(), tr.mean(axis=(0, 2, 3)))
    assert np.allclose(ds.std.numpy(), tr.std(axis=(0, 2, 3)))
    x, _ = ds[0]
    assert abs(float(x[:, 1].mean())) < 1.5 and 0.3 < float(x[:, 1].std()) < 3  # channel 1 is on the unit scale


def test_splits_are_disjoint_blocks_in_order(tmp_path):
    T = 50
    arr = np.broadcast_to(np.arange(T, dtype=np.float32)[:, None, None, None], (T, 1, 3, 3)).copy()
    path = _write(tmp_path / "t.npy", arr, "npy")
    rows = {}
    for split in ("train", "val", "test"):
        ds = ArrayDataset(path, input_frames=2, output_frames=2, split=split, splits=(0.6, 0.2, 0.2))
        frames = set()
        for i in range(len(ds)):
            x, y = ds[i]
            frames |= {round(v) for v in ds.denormalize(torch.cat([x, y]))[:, 0, 0, 0].tolist()}
        rows[split] = frames
    assert (
        rows["train"] == set(range(0, 30)) and rows["val"] == set(range(30, 40)) and rows["test"] == set(range(40, 50))
    )
    # explicit index ranges and counts
    ds = ArrayDataset(
        path, input_frames=2, output_frames=2, split="val", splits={"train": (10, 30), "val": (0, 10), "test": (30, 50)}
    )
    assert round(float(ds.denormalize(ds[0][0])[0, 0, 0, 0])) == 0
    assert torch.allclose(ds.mean, torch.tensor([19.5], dtype=torch.float64))
    ds = ArrayDataset(path, input_frames=2, output_frames=2, split="test", splits=(20, 10, 5))
    assert len(ds) == 5 - 4 + 1


def test_stride_step_and_lazy_memmap(tmp_path):
    T = 40
    arr = np.broadcast_to(np.arange(T, dtype=np.float32)[:, None, None, None], (T, 1, 2, 2)).copy()
    path = _write(tmp_path / "t.npy", arr, "npy")
    ds = ArrayDataset(path, input_frames=2, output_frames=3, stride=3, step=2, splits=(1.0, 0.0, 0.0))
    span = (2 + 3 - 1) * 2 + 1
    assert len(ds) == len(range(0, T - span + 1, 3))
    x, y = ds[1]
    got = ds.denormalize(torch.cat([x, y]))[:, 0, 0, 0].round().tolist()
    assert got == [3, 5, 7, 9, 11]
    assert isinstance(ds.segments[0], np.memmap)  # the split is not copied into memory
    assert torch.equal(ds[-1][0], ds[len(ds) - 1][0])
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_trajectories_never_mix_and_shuffle_is_seeded(tmp_path):
    N, T = 10, 6
    arr = np.zeros((N, T, 1, 3, 3), np.float32) + np.arange(N, dtype=np.float32)[:, None, None, None, None]
    arr += np.arange(T, dtype=np.float32)[None, :, None, None, None] * 0.01
    path = _write(tmp_path / "traj.h5", arr, "h5")
    ds = ArrayDataset(path, variable="field", input_frames=2, output_frames=2, splits=(6, 2, 2))
    assert len(ds) == 6 * (T - 4 + 1)
    for i in range(len(ds)):
        w = ds.denormalize(torch.cat(ds[i]))[:, 0, 0, 0]
        assert len({round(v) for v in w.floor().tolist()}) == 1  # one trajectory per window
    ids = {}
    for split in ("train", "val", "test"):
        kw = dict(variable="field", input_frames=2, output_frames=2, split=split, splits=(6, 2, 2))
        a = ArrayDataset(path, shuffle=True, seed=3, **kw)
        b = ArrayDataset(path, shuffle=True, seed=3, **kw)
        assert all(torch.equal(a[i][0], b[i][0]) for i in range(len(a)))
        ids[split] = {round(float(a.denormalize(a[i][0])[0, 0, 0, 0])) for i in range(len(a))}
    assert sorted(ids["train"] | ids["val"] | ids["test"]) == list(range(N))
    assert sum(map(len, ids.values())) == N and ids["train"] != set(range(6))


def test_dataloader_batches_and_denormalize_on_batches(tmp_path):
    arr = _series(T=30)
    ds = ArrayDataset(_write(tmp_path / "a.npz", arr, "npz"), variable="field", input_frames=4, output_frames=4)
    x, y = next(iter(DataLoader(ds, batch_size=3)))
    assert x.shape == (3, 4, 2, 6, 5) and y.shape == (3, 4, 2, 6, 5)
    assert torch.allclose(ds.normalize(ds.denormalize(y)), y, atol=1e-5)
    with pytest.raises(ValueError, match=r"\(\.\.\., 2, H, W\)"):
        ds.denormalize(torch.zeros(3, 6, 5))


def test_user_stats_override(tmp_path):
    arr = _series(T=20)
    ds = ArrayDataset(_write(tmp_path / "a.npy", arr, "npy"), input_frames=2, output_frames=2, stats=(1.0, [2.0, 4.0]))
    x, _ = ds[0]
    assert torch.allclose(x[0, 1], torch.from_numpy((arr[0, 1] - 1.0) / 4.0))
    with pytest.raises(ValueError, match="std must be > 0"):
        ArrayDataset(tmp_path / "a.npy", input_frames=2, output_frames=2, stats=(0.0, 0.0))


def test_resolve_splits_rules():
    assert resolve_splits(10, (0.8, 0.1, 0.1), "x") == {"train": (0, 8), "val": (8, 9), "test": (9, 10)}
    assert resolve_splits(10, (5, 2, 3), "x") == {"train": (0, 5), "val": (5, 7), "test": (7, 10)}
    with pytest.raises(ValueError, match="sum to at most 1"):
        resolve_splits(10, (0.8, 0.2, 0.2), "x")
    with pytest.raises(ValueError, match="sum to at most 10"):
        resolve_splits(10, (8, 2, 2), "x")
    with pytest.raises(ValueError, match="overlap"):
        resolve_splits(10, {"train": (0, 6), "val": (5, 8), "test": (8, 10)}, "x")
    with pytest.raises(ValueError, match="train split is empty"):
        resolve_splits(10, (0.0, 0.5, 0.5), "x")
    with pytest.raises(ValueError, match="3 entries"):
        resolve_splits(10, (0.5, 0.5), "x")


def test_window_base_rejects_bad_arguments():
    seg = np.zeros((10, 1, 2, 2), np.float32)
    kw = dict(mean=torch.zeros(1), std=torch.ones(1), split="train")
    with pytest.raises(ValueError, match="input_frames must be an integer >= 1"):
        WindowDataset([seg], input_frames=0, output_frames=1, **kw)
    with pytest.raises(ValueError, match="split must be one of"):
        WindowDataset([seg], input_frames=1, output_frames=1, mean=torch.zeros(1), std=torch.ones(1), split="valid")
    with pytest.raises(ValueError, match="too short for one window"):
        WindowDataset([seg], input_frames=6, output_frames=6, **kw)


# ----------------------------------------------------------------------------- bad input
def test_bad_files_raise_clear_errors(tmp_path):
    kw = dict(input_frames=2, output_frames=2)
    with pytest.raises(FileNotFoundError, match="nope.npy"):
        ArrayDataset(tmp_path / "nope.npy", **kw)
    arr = _series()
    good = _write(tmp_path / "good.npy", arr, "npy")
    (tmp_path / "trunc.npy").write_bytes(good.read_bytes()[:500])
    with pytest.raises(ValueError, match="trunc.npy"):
        ArrayDataset(tmp_path / "trunc.npy", **kw)
    good_h5 = _write(tmp_path / "good.h5", arr, "h5")
    (tmp_path / "trunc.h5").write_bytes(good_h5.read_bytes()[:1000])
    with pytest.raises(ValueError, match="trunc.h5"):
        ArrayDataset(tmp_path / "trunc.h5", variable="field", **kw)
    (tmp_path / "data.csv").write_text("1,2\n")
    with pytest.raises(ValueError, match="unsupported file type"):
        ArrayDataset(tmp_path / "data.csv", **kw)


def test_bad_contents_raise_clear_errors(tmp_path):
    kw = dict(input_frames=2, output_frames=2)
    with pytest.raises(ValueError, match=r"shape \(40, 6\).*expected"):
        ArrayDataset(_write(tmp_path / "flat.npy", np.zeros((40, 6), np.float32), "npy"), **kw)
    with pytest.raises(TypeError, match="complex64"):
        ArrayDataset(_write(tmp_path / "c.npy", np.zeros((20, 4, 4), np.complex64), "npy"), **kw)
    bad = _series()
    bad[38, 0, 1, 1] = np.nan
    path = _write(tmp_path / "nan.npy", bad, "npy")
    ArrayDataset(path, split="train", **kw)  # the NaN is in the test rows only
    with pytest.raises(ValueError, match="nan.npy.*NaN or Inf"):
        ArrayDataset(path, split="test", **kw)
    bad[3, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        ArrayDataset(_write(tmp_path / "inf.npy", bad, "npy"), split="val", **kw)
    with pytest.raises(ValueError, match="too short"):
        ArrayDataset(_write(tmp_path / "short.npy", _series(T=12), "npy"), split="val", input_frames=2, output_frames=1)
    for fmt in ("npz", "h5", "nc", "pt-dict"):
        p = _write(tmp_path / f"v{SUFFIX[fmt]}", _series(T=10), fmt)
        with pytest.raises(KeyError, match="'temp' not found"):
            ArrayDataset(p, variable="temp", **kw)
        with pytest.raises(ValueError, match="pass variable="):
            ArrayDataset(p, **kw)
    with pytest.raises(ValueError, match="split must be one of"):
        ArrayDataset(tmp_path / "v.npz", variable="field", split="validation", **kw)


def test_import_is_lazy():
    code = (
        "import sys, sdkd.data as d; heavy = [m for m in ('scipy', 'h5py', 'xarray', 'torch') if m in sys.modules];"
        "assert not heavy, heavy; assert 'ArrayDataset' in dir(d)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize(
    "fmt, missing", [("h5", ["h5py"]), ("nc", ["xarray"]), ("nc", ["netCDF4", "h5netcdf"])], ids=str
)
def test_missing_reader_package_is_named_not_the_file(tmp_path, monkeypatch, fmt, missing):
    for module in ["h5py"] if fmt == "h5" else ["xarray"]:
        pytest.importorskip(module)
    path = _write(tmp_path / f"good{SUFFIX[fmt]}", _series(), fmt)  # a valid file
    for module in missing:
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    with pytest.raises(ImportError) as exc:
        ArrayDataset(path, variable="field", input_frames=2, output_frames=2)
    msg = str(exc.value)
    assert "pip install 'sdkd[data]'" in msg and "good" in msg
    assert "truncated" not in msg and "not a" not in msg
    if len(missing) == 1:
        assert isinstance(exc.value, ModuleNotFoundError) and f"optional package {missing[0]!r}" in msg
