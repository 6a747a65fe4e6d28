"""No host reads in the per-step path (DESIGN.md section 2, issue 18 item 2).

A ``TorchFunctionMode`` counts every call that reads a tensor value back to the host (``.item()``,
``.tolist()``, ``bool()``, ``float()``, ``int()``, ``.cpu()``, ``.numpy()``...) made from sdkd's own code,
over several steps of each distillation strategy, each op, and the Trainer's epoch. On the CPU such a
read is cheap, but the same line on a GPU stalls the device behind Python. Reads inside torch itself
(e.g. Adam's CPU step counter) are not sdkd's and are not counted; the ``gpu`` test checks the real
thing with ``torch.cuda.set_sync_debug_mode``.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.data import TensorDataset

import sdkd
from sdkd.distill import Distiller
from sdkd.losses import SpectralKD
from sdkd.ops import a2d_weights, attention, capped_simplex_projection, spectral_loss
from sdkd.train.loop import Trainer

B, T, CH, H, W = 2, 2, 1, 8, 8

_READS = {
    torch.Tensor.item,
    torch.Tensor.tolist,
    torch.Tensor.__bool__,
    torch.Tensor.__float__,
    torch.Tensor.__int__,
    torch.Tensor.__index__,
    torch.Tensor.__complex__,
    torch.Tensor.cpu,
    torch.Tensor.numpy,
}
_SDKD_DIRS = tuple(
    str(Path(p).resolve()) for p in (Path(sdkd.__file__).parent, Path(sdkd.__file__).parent.parent / "kernels")
)
_DISPATCH_FILES = tuple(str(Path(torch.__file__).parent.resolve() / f) for f in ("overrides.py", "_tensor.py"))


class HostReadCounter(TorchFunctionMode):
    """Records ``(read, file:line)`` for each host read made directly by sdkd code (reads made by torch
    itself, e.g. the DataLoader's sampler or Adam's CPU step counter, are torch's and not counted)."""

    def __init__(self):
        super().__init__()
        self.reads: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _READS:
            frame = sys._getframe(1)
            while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(_DISPATCH_FILES):
                frame = frame.f_back
            where = str(Path(frame.f_code.co_filename).resolve()) if frame is not None else ""
            if where.startswith(_SDKD_DIRS):
                self.reads.append(f"{func.__name__} at {where}:{frame.f_lineno}")
        return func(*args, **(kwargs or {}))


class TinyNet(nn.Module):
    def __init__(self, width: int = 4):
        super().__init__()
        self.conv1 = nn.Conv2d(T * CH, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, T * CH, 3, padding=1)

    def forward(self, x, return_features=False):
        b = x.shape[0]
        h = self.conv1(x.reshape(b, T * CH, H, W))
        out = self.conv2(torch.tanh(h)).reshape(b, T, CH, H, W)
        return (out, {"hid": h}) if return_features else out


STRATEGIES = [
    ("single", {}),
    ("aver", {}),
    ("camkd", {}),
    ("a2d", {}),
    ("a2d", {"per_sample": True}),
    ("a2d", {"grad_space": "params"}),
    ("a2d", {"features": {"hid": "hid"}}),
    ("camkd", {"features": {"conv1": "conv1"}}),  # a submodule path: tapped by a forward hook
]


def _distiller(strategy: str, kwargs: dict, device: str = "cpu") -> Distiller:
    teachers = [TinyNet() for _ in range(1 if strategy == "single" else 3)]
    return Distiller(TinyNet(), teachers, strategy=strategy, kd_loss=SpectralKD(), **kwargs).to(device)


def _steps(distiller: Distiller, opt: torch.optim.Optimizer, batches) -> None:
    for x, y in batches:
        opt.zero_grad(set_to_none=True)
        out = distiller(x, y)
        distiller.backward(out)
        opt.step()


def _batches(n: int, device: str = "cpu"):
    return [(torch.randn(B, T, CH, H, W, device=device), torch.randn(B, T, CH, H, W, device=device)) for _ in range(n)]


@pytest.mark.parametrize("strategy,kwargs", STRATEGIES, ids=lambda v: str(v))
def test_distiller_step_reads_nothing_back(strategy, kwargs):
    d = _distiller(strategy, kwargs)
    opt = torch.optim.Adam(d.trainable_parameters(), lr=1e-3)
    _steps(d, opt, _batches(1))  # warm-up: first-call caches (plans, tables, dispatch picks)
    with HostReadCounter() as counter:
        _steps(d, opt, _batches(2))
    assert counter.reads == []


def test_counter_sees_reads():
    """The counter is not blind: the reads this issue removed are counted when made from sdkd code."""
    from sdkd.distill import DistillOutput

    out = DistillOutput(torch.tensor(1.0), {"task": torch.tensor(2.0)}, torch.ones(1), torch.zeros(1))
    with HostReadCounter() as counter:
        out.log()  # the one documented read (logging)
        torch.ones(2).sum().item()  # the test's own read: not sdkd's
    assert len(counter.reads) == 1 and "tolist" in counter.reads[0]


def _op_calls(device: str = "cpu"):
    s = torch.randn(2, 3, 16, 12, device=device, requires_grad=True)
    t = torch.randn(2, 3, 16, 12, device=device)
    y = (torch.randn(5, 4, device=device) * 3).requires_grad_()
    v = torch.randn(4, 3, 7, dtype=torch.float64, device=device)
    z = torch.randn(2, 6, 8, device=device, requires_grad=True)
    w_qkv, w_o = torch.randn(24, 8, device=device) * 0.2, torch.randn(8, 8, device=device) * 0.2
    ln_w, ln_b = torch.ones(8, device=device), torch.zeros(8, device=device)

    def run():
        spectral_loss(s, t, 0.25).backward()
        spectral_loss(s, t, (0.1, 0.3), weights=(1.0, 2.0, 0.5), reduction="band_mean").backward()
        SpectralKD(weighting="adaptive")(s, t).backward()
        capped_simplex_projection(y, 0.6).square().sum().backward()
        a2d_weights(v @ v.mT, 0.6)  # input checks included (finite, symmetric, PSD)
        attention(z, None, w_qkv, None, w_o, None, ln_w, ln_b, 2, check=True).sum().backward()

    return run


def test_ops_read_nothing_back():
    run = _op_calls()
    run()
    with HostReadCounter() as counter:
        run()
        run()
    assert counter.reads == []


def _trainer(tmp_path, log_every: int, loss_fn=None, steps: int = 6) -> Trainer:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, T, CH, H, W, generator=g), torch.randn(16, T, CH, H, W, generator=g)
    data = TensorDataset(x, y)
    cfg = {"epochs": 1, "lr": 1e-3, "patience": 0, "progress": False, "max_steps_per_epoch": steps}
    cfg["log_every"] = log_every
    kw = {"loss_fn": loss_fn} if loss_fn is not None else {}
    return Trainer(TinyNet(), data, data, cfg, tmp_path, batch_size=2, device="cpu", log=lambda m: None, **kw)


def _distill_loss_fn(distiller: Distiller):
    def loss_fn(batch, model):  # as sdkd.train.run's distillation stage
        out = distiller(batch[0], batch[1])
        ready = out.grads is not None
        if ready:
            distiller.backward(out)
        return {"loss": out.loss, "logs": out.terms, "grads_ready": ready}

    return loss_fn


@pytest.mark.parametrize("strategy", ["none", "a2d"])
def test_trainer_reads_once_per_log_interval(tmp_path, strategy):
    """4 steps: log_every=2 reads at steps 2 and 4, log_every=100 once (last step); plus the epoch summary."""
    counts = {}
    for log_every in (2, 100):
        loss_fn = None
        if strategy != "none":
            d = Distiller(TinyNet(), [TinyNet(), TinyNet()], strategy=strategy)
            loss_fn = _distill_loss_fn(d)
        tr = _trainer(tmp_path / f"{strategy}{log_every}", log_every, loss_fn, steps=4)
        if strategy != "none":
            d.student = tr.model
        tr._train_epoch(0)  # warm-up epoch (first-call caches), not counted
        with HostReadCounter() as counter:
            tr._train_epoch(1)
        counts[log_every] = counter.reads
    assert len(counts[2]) == 3, counts[2]
    assert len(counts[100]) == 2, counts[100]


def test_trainer_names_the_first_nonfinite_step(tmp_path):
    calls = []

    def loss_fn(batch, model):
        loss = nn.functional.mse_loss(model(batch[0]), batch[1])
        calls.append(1)
        return {"loss": loss * float("nan") if len(calls) == 5 else loss}

    tr = _trainer(tmp_path, 3, loss_fn)
    with pytest.raises(FloatingPointError, match=r"non-finite training loss at epoch 1, step 4"):
        tr.fit()
    assert len(calls) == 6  # caught at the read of the interval that holds step 4, never dropped
    assert not (tmp_path / "last.pt").exists()


@pytest.mark.parametrize("bad", [0, -3, 2.5, "often", True])
def test_trainer_rejects_bad_log_every(tmp_path, bad):
    with pytest.raises(ValueError, match=r"train.log_every: got .*; expected an integer >= 1"):  # the schema
        _trainer(tmp_path, bad)


def test_nonfinite_checks_still_raise_on_cpu():
    s, t = torch.randn(1, 8, 8), torch.randn(1, 8, 8)
    t[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="teacher tensor contains NaN"):
        spectral_loss(s, t)
    with pytest.raises(ValueError, match="teacher tensor contains NaN"):
        SpectralKD()(s, t)
    with pytest.raises(ValueError, match="NaN or Inf"):
        capped_simplex_projection(torch.tensor([[0.1, float("nan")]]), 0.6)
    with pytest.raises(ValueError, match="not positive semi-definite"):
        a2d_weights(torch.tensor([[1.0, 2.0], [2.0, 1.0]]), 0.6)


# ----------------------------------------------------------------------------- GPU: the real synchronisations
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_steps_do_not_synchronize():
    """Under ``set_sync_debug_mode("error")`` any device-to-host synchronisation in a step raises."""
    runs = []
    for strategy, kwargs in STRATEGIES:
        d = _distiller(strategy, kwargs, "cuda")
        opt = torch.optim.Adam(d.trainable_parameters(), lr=1e-3)
        runs.append((d, opt))
        _steps(d, opt, _batches(1, "cuda"))
    ops = _op_calls("cuda")
    ops()
    batches = _batches(2, "cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for d, opt in runs:
            _steps(d, opt, batches)
        ops()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_trainer_synchronizes_only_to_log(tmp_path):
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(16, T, CH, H, W, generator=g), torch.randn(16, T, CH, H, W, generator=g))
    cfg = {"epochs": 1, "lr": 1e-3, "patience": 0, "progress": False, "max_steps_per_epoch": 6, "log_every": 3}
    cfg["amp"] = False
    tr = Trainer(TinyNet(), data, data, cfg, tmp_path, batch_size=2, device="cuda", log=lambda m: None)
    tr._train_epoch(0)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tr._train_epoch(1)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) <= 3, [str(w.message) for w in syncs]  # two log reads + the epoch summary
