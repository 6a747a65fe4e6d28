"""NavierStokesDataset: FNO .mat files (v5 via scipy, v7.3 via h5py), arrays and .npy."""

import numpy as np
import pytest
import torch

from sdkd.data import NavierStokesDataset


def _fno_u(N=20, S=8, T=12, seed=0):
    """Trajectories in FNO's MATLAB layout (N, S, S, T)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, S, S, T)).astype(np.float32)


def _save_v5(path, u):
    import scipy.io

    scipy.io.savemat(path, {"a": u[..., 0], "u": u, "t": np.arange(1, u.shape[-1] + 1, dtype=np.float64)})
    return path


def _save_v73(path, u):
    """MATLAB v7.3 is HDF5 with the axes stored in reverse order."""
    import h5py

    with h5py.File(path, "w") as f:
        f["a"] = u[..., 0].T
        f["u"] = u.T
    return path


def test_v5_and_v73_read_identically_with_fno_frames(tmp_path):
    u = _fno_u()
    v5 = NavierStokesDataset(_save_v5(tmp_path / "ns.mat", u), "test", input_frames=5, output_frames=5)
    v73 = NavierStokesDataset(_save_v73(tmp_path / "ns73.mat", u), "test", input_frames=5, output_frames=5)
    assert len(v5) == len(v73) == 2  # 20 trajectories -> 16/2/2
    assert v5.in_shape == (5, 1, 8, 8) and v5.out_frames == 5
    train = u[:16].astype(np.float64)
    assert torch.allclose(v5.mean, torch.tensor([train.mean()], dtype=torch.float64))
    assert torch.allclose(v5.std, torch.tensor([train.std()], dtype=torch.float64))
    for i in range(2):
        x5, y5 = v5[i]
        x73, y73 = v73[i]
        assert torch.equal(x5, x73) and torch.equal(y5, y73)
        # x = u[n, :, :, 0:5], y = u[n, :, :, 5:10] of trajectory 18 + i, channel axis added
        n = 18 + i
        assert torch.allclose(
            v5.denormalize(x5)[:, 0], torch.from_numpy(np.moveaxis(u[n, :, :, 0:5], -1, 0)), atol=1e-5
        )
        assert torch.allclose(
            v5.denormalize(y5)[:, 0], torch.from_numpy(np.moveaxis(u[n, :, :, 5:10], -1, 0)), atol=1e-5
        )


def test_default_splits_1000_100_100_in_order():
    N = 1200
    arr = np.zeros((N, 4, 1, 2, 2), np.float32) + np.arange(N, dtype=np.float32)[:, None, None, None, None]
    sizes, first = {}, {}
    for split in ("train", "val", "test"):
        ds = NavierStokesDataset(arr, split, input_frames=2, output_frames=2)
        sizes[split] = len(ds)
        first[split] = round(float(ds.denormalize(ds[0][0])[0, 0, 0, 0]))
        assert torch.allclose(ds.mean, torch.tensor([499.5], dtype=torch.float64))  # train trajectories 0..999
    assert sizes == {"train": 1000, "val": 100, "test": 100}
    assert first == {"train": 0, "val": 1000, "test": 1100}


def test_small_n_uses_fractions_and_splits_are_disjoint():
    N = 30
    arr = torch.arange(N, dtype=torch.float32)[:, None, None, None].expand(N, 6, 3, 3).contiguous()
    seen = {}
    for split in ("train", "val", "test"):
        ds = NavierStokesDataset(arr, split, input_frames=3, output_frames=3)
        seen[split] = {round(float(ds.denormalize(ds[i][0])[0, 0, 0, 0])) for i in range(len(ds))}
    assert seen == {"train": set(range(24)), "val": set(range(24, 27)), "test": set(range(27, 30))}


def test_npy_memmap_source_and_sliding_stride(tmp_path):
    arr = np.random.default_rng(1).standard_normal((10, 9, 4, 4)).astype(np.float32)  # (N, T, H, W)
    np.save(tmp_path / "gen.npy", arr)
    ds = NavierStokesDataset(tmp_path / "gen.npy", "train", input_frames=3, output_frames=2, splits=(6, 2, 2), stride=2)
    assert len(ds) == 6 * len(range(0, 9 - 5 + 1, 2))
    x, y = ds[1]  # trajectory 0, start 2
    assert torch.allclose(ds.denormalize(x)[:, 0], torch.from_numpy(arr[0, 2:5]), atol=1e-5)
    assert torch.allclose(ds.denormalize(y)[:, 0], torch.from_numpy(arr[0, 5:7]), atol=1e-5)


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.mat"):
        NavierStokesDataset(tmp_path / "missing.mat")
    good = _save_v5(tmp_path / "good.mat", _fno_u())
    raw = good.read_bytes()
    (tmp_path / "trunc.mat").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="trunc.mat"):
        NavierStokesDataset(tmp_path / "trunc.mat")
    (tmp_path / "head.mat").write_bytes(raw[:300])  # only the header and the start of 'a' survive
    with pytest.raises(KeyError, match="'u' not found.*truncated"):
        NavierStokesDataset(tmp_path / "head.mat")
    good73 = _save_v73(tmp_path / "good73.mat", _fno_u())
    (tmp_path / "trunc73.mat").write_bytes(good73.read_bytes()[:3000])
    with pytest.raises(ValueError, match="trunc73.mat"):
        NavierStokesDataset(tmp_path / "trunc73.mat")
    with pytest.raises(KeyError, match="'w' not found"):
        NavierStokesDataset(good, variable="w")
    with pytest.raises(KeyError, match="'w' not found"):
        NavierStokesDataset(good73, variable="w")
    with pytest.raises(ValueError, match=r"variable 'a' must be \(N, H, W, T\)"):
        NavierStokesDataset(good, variable="a")
    with pytest.raises(ValueError, match="too short"):
        NavierStokesDataset(good, input_frames=10, output_frames=10)  # T = 12 < 20
    with pytest.raises(ValueError, match=r"\(N, T, H, W\)"):
        NavierStokesDataset(np.zeros((5, 4, 4), np.float32))
    with pytest.raises(TypeError, match="real numeric"):
        NavierStokesDataset(np.zeros((5, 4, 4, 4), np.complex64))
    bad = _fno_u()
    bad[19, 0, 0, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        NavierStokesDataset(bad.transpose(0, 3, 1, 2), "test", input_frames=5, output_frames=5)
    with pytest.raises(TypeError, match="source must be"):
        NavierStokesDataset(42)


@pytest.mark.parametrize("missing", ["h5py", "scipy"])
def test_missing_mat_reader_is_named_not_the_file(tmp_path, monkeypatch, missing):
    import sys

    pytest.importorskip("scipy")
    path = _save_v5(tmp_path / "ns.mat", _fno_u())  # a valid file
    monkeypatch.setitem(sys.modules, missing, None)  # as if not installed
    if missing == "scipy":
        monkeypatch.setitem(sys.modules, "scipy.io", None)
    with pytest.raises(ModuleNotFoundError) as exc:
        NavierStokesDataset(path, "test", input_frames=5, output_frames=5)
    msg = str(exc.value)
    assert f"optional package {missing!r} is not installed: pip install 'sdkd[data]'" in msg and "ns.mat" in msg
    assert "truncated" not in msg
