"""TaxiBJDataset on small h5 files in DeepST's layout (data (slots, 2, H, W), date YYYYMMDDss)."""

import numpy as np
import pytest
import torch

h5py = pytest.importorskip("h5py")

from sdkd.data import TaxiBJDataset  # noqa: E402


def _dates(start, days):
    out = []
    for d in range(days):
        day = str(np.datetime64(start) + d).replace("-", "")
        out += [f"{day}{s:02d}".encode() for s in range(1, 49)]
    return out


def _write(path, start, days, drop=(), values=None, seed=0):
    dates = [d for i, d in enumerate(_dates(start, days)) if i not in set(drop)]
    if values is None:
        values = np.random.default_rng(seed).integers(0, 300, (len(dates), 2, 4, 4)).astype(np.float64)
    with h5py.File(path, "w") as f:
        f["data"] = values
        f["date"] = np.array(dates)
    return path, values


def _slot_values(ds, i):
    """Per-frame id stored in pixel (0, 0) of channel 0 of a window, in physical units."""
    return ds.denormalize(torch.cat(ds[i]))[:, 0, 0, 0].round().long().tolist()


def test_windows_skip_gaps_and_default_day_splits(tmp_path):
    n13 = 3 * 48 - 1
    ids = np.zeros((n13, 2, 4, 4))
    ids[:, 0, 0, 0] = np.arange(n13)  # frame id in one pixel, noise elsewhere
    ids[:, :, 1:] = np.random.default_rng(0).integers(0, 300, (n13, 2, 3, 4))
    _write(tmp_path / "BJ13_M32x32_T30_InOut.h5", "2013-07-01", 3, drop=(10,), values=ids)
    _write(tmp_path / "BJ14_M32x32_T30_InOut.h5", "2014-03-01", 2, seed=1)
    train = TaxiBJDataset(tmp_path, "train", test_days=1, val_days=1)
    val = TaxiBJDataset(tmp_path, "val", test_days=1, val_days=1)
    test = TaxiBJDataset(tmp_path, "test", test_days=1, val_days=1)
    assert train.in_shape == (4, 2, 4, 4) and train.out_frames == 4
    # train: the 3 days of 2013 with slot 11 of day 1 missing -> runs of 10 and 133 slots
    assert [s.shape[0] for s in train.segments] == [10, 133]
    assert len(train) == (10 - 8 + 1) + (133 - 8 + 1) and len(val) == len(test) == 48 - 8 + 1
    for i in range(len(train)):  # every window is 8 consecutive slots
        v = _slot_values(train, i)
        assert v == list(range(v[0], v[0] + 8))
    assert val.slot_keys.min() > train.slot_keys.max() and test.slot_keys.min() > val.slot_keys.max()
    # all splits share the train statistics (one scalar for inflow and outflow)
    for ds in (val, test):
        assert torch.equal(ds.mean, train.mean) and torch.equal(ds.std, train.std)
    tr = ids.astype(np.float64)
    assert np.allclose(train.mean.numpy(), [tr.mean(), tr.mean()]) and np.allclose(train.std.numpy(), tr.std())


def test_file_list_fractions_and_per_channel(tmp_path):
    p, values = _write(tmp_path / "a.h5", "2015-01-01", 2)
    values[:, 1] *= 10
    p, values = _write(tmp_path / "a.h5", "2015-01-01", 2, values=values)
    ds = TaxiBJDataset([p], "test", input_frames=2, output_frames=3, splits=(0.5, 0.25, 0.25), per_channel=True)
    tr = values[:48]
    assert np.allclose(ds.mean.numpy(), tr.mean(axis=(0, 2, 3))) and np.allclose(ds.std.numpy(), tr.std(axis=(0, 2, 3)))
    assert len(ds) == 24 - 5 + 1
    x, y = ds[0]
    assert torch.allclose(ds.denormalize(torch.cat([x, y])), torch.from_numpy(values[72:77]).float(), atol=1e-3)
    same = TaxiBJDataset(p, "test", input_frames=2, output_frames=3, splits=(0.5, 0.25, 0.25), per_channel=True)
    assert torch.equal(same[3][0], ds[3][0])


def test_bad_files_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="none.h5"):
        TaxiBJDataset(tmp_path / "none.h5")
    with pytest.raises(FileNotFoundError, match="no .h5 files"):
        TaxiBJDataset(tmp_path)
    good, values = _write(tmp_path / "good.h5", "2015-01-01", 4)
    (tmp_path / "trunc").mkdir()
    (tmp_path / "trunc" / "t.h5").write_bytes(good.read_bytes()[:2000])
    with pytest.raises(ValueError, match="t.h5"):
        TaxiBJDataset(tmp_path / "trunc" / "t.h5")
    with h5py.File(tmp_path / "nodate.h5", "w") as f:
        f["data"] = values
    with pytest.raises(KeyError, match="no 'date' dataset"):
        TaxiBJDataset(tmp_path / "nodate.h5")
    with h5py.File(tmp_path / "shape.h5", "w") as f:
        f["data"] = values[:, 0]
        f["date"] = np.array(_dates("2015-01-01", 4))
    with pytest.raises(ValueError, match=r"shape.h5: 'data' must be \(slots, 2, H, W\)"):
        TaxiBJDataset(tmp_path / "shape.h5")
    dates = _dates("2015-01-01", 4)
    dates[5] = b"2015010199"
    with h5py.File(tmp_path / "date.h5", "w") as f:
        f["data"] = values
        f["date"] = np.array(dates)
    with pytest.raises(ValueError, match=r"date\[5\] = '2015010199'"):
        TaxiBJDataset(tmp_path / "date.h5")
    nan = values.copy()
    nan[-3, 1, 2, 2] = np.nan
    _write(tmp_path / "nan.h5", "2015-01-01", 4, values=nan)
    with pytest.raises(ValueError, match="NaN or Inf"):
        TaxiBJDataset(tmp_path / "nan.h5", "test", test_days=1, val_days=1)
    with pytest.raises(ValueError, match="leave no training days"):
        TaxiBJDataset(good, test_days=2, val_days=2)
    with pytest.raises(ValueError, match="too short"):
        TaxiBJDataset(good, "val", input_frames=30, output_frames=30, test_days=1, val_days=1)


def test_taxibj_plus_daily_totals_on_a_128x128_file(tmp_path):
    """TaxiBJ+ (Table 2: 128 x 128, 1-day interval): each complete day's 48 slots summed, a day
    missing a slot dropped (windows never bridge it), splits and windows counted in days."""
    days, drop = 10, 4 * 48 + 7  # day 4 (2015-03-05) loses one half-hour slot
    n = days * 48 - 1
    values = np.random.default_rng(3).integers(0, 50, (n, 2, 128, 128)).astype(np.uint16)
    path, _ = _write(tmp_path / "TaxiBJ+.h5", "2015-03-01", days, drop=(drop,), values=values)
    slots = np.insert(np.arange(n), drop, -1)  # row of every (day, slot) position, -1 where missing
    kept = [d for d in range(days) if d != 4]  # 9 complete days, in time order
    totals = np.stack([values[slots[d * 48 : (d + 1) * 48]].astype(np.float64).sum(0) for d in kept])
    kw = dict(interval="day", splits=(5, 2, 2))  # days 0-3 and 5 | 6, 7 | 8, 9
    train = TaxiBJDataset(path, "train", input_frames=2, output_frames=2, **kw)
    assert train.in_shape == (2, 2, 128, 128) and train.interval == "day"
    assert [s.shape[0] for s in train.segments] == [4, 1] and len(train) == 1
    x, y = train[0]
    np.testing.assert_allclose(train.denormalize(torch.cat([x, y])).numpy(), totals[0:4], rtol=1e-5)
    np.testing.assert_allclose(train.mean.numpy(), [totals[:5].mean()] * 2, rtol=1e-6)
    # 1 -> 1 windows: 3 within days 0-3, none bridging the missing day 4 to day 5
    assert len(TaxiBJDataset(path, "train", input_frames=1, output_frames=1, **kw)) == 3
    test = TaxiBJDataset(path, "test", input_frames=1, output_frames=1, **kw)
    assert len(test) == 1 and torch.equal(test.mean, train.mean)
    np.testing.assert_allclose(test.denormalize(torch.cat(test[0])).numpy(), totals[7:9], rtol=1e-5)
    # the half-hour series of the same file keeps every slot
    half = TaxiBJDataset(path, "train", input_frames=2, output_frames=2, splits=(240, 120, 119))
    assert half.interval == "30min" and [s.shape[0] for s in half.segments] == [drop, 240 - drop]
    with pytest.raises(ValueError, match="interval must be one of"):
        TaxiBJDataset(path, interval="hour")
