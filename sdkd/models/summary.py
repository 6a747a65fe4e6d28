"""``summary(model, in_shape)``: parameters, FLOPs and inference latency of a forecaster.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add counts as 2 FLOPs;
ops torch has no formula for, such as custom kernels, count as 0). Latency is the median of a few
timed forward passes in ``inference_mode`` after warm-up, with CUDA synchronisation on GPU.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass
class ModelSummary:
    """What ``summary`` measured; ``flops`` is per sample (one forward pass, batch 1)."""

    model: str
    in_shape: tuple[int, int, int, int]
    params: int
    trainable_params: int
    flops: int
    batch_size: int
    latency_ms: float | None
    device: str

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        lat = "n/a" if self.latency_ms is None else f"{self.latency_ms:.2f} ms (batch {self.batch_size}, {self.device})"
        return (
            f"{self.model}: in {self.in_shape}, params {self.params / 1e6:.3f} M, "
            f"FLOPs {self.gflops:.3f} G/sample, latency {lat}"
        )


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_flops(model: nn.Module, x: torch.Tensor) -> int:
    """Total FLOPs of one forward pass of ``model`` on ``x`` (no autograd graph is built)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


def measure_latency(model: nn.Module, x: torch.Tensor, runs: int = 5, warmup: int = 2) -> float:
    """Median wall time in milliseconds of ``model(x)`` over ``runs`` timed calls."""
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            sync()
            t0 = time.perf_counter()
            model(x)
            sync()
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def summary(
    model: nn.Module,
    in_shape: tuple[int, int, int, int] | None = None,
    *,
    batch_size: int = 1,
    latency: bool = True,
    runs: int = 5,
    warmup: int = 2,
    device: str | torch.device | None = None,
) -> ModelSummary:
    """Parameters, per-sample FLOPs and median latency at ``batch_size`` of ``model`` on inputs
    ``(B, *in_shape)``; ``in_shape`` defaults to ``model.in_shape``. The model is put in eval mode
    while measuring and its train/eval mode is restored afterwards; it stays on its device unless
    ``device`` is given."""
    if in_shape is None:
        in_shape = getattr(model, "in_shape", None)
        if in_shape is None:
            raise ValueError("in_shape=(T_in, C, H, W) is required for a model without an `in_shape` attribute")
    in_shape = tuple(int(v) for v in in_shape)
    if len(in_shape) != 4 or min(in_shape) <= 0:
        raise ValueError(f"in_shape must be (T_in, C, H, W) of positive ints, got {in_shape}")
    if batch_size <= 0 or runs <= 0 or warmup < 0:
        raise ValueError(f"need batch_size > 0, runs > 0, warmup >= 0; got {batch_size}, {runs}, {warmup}")
    if device is not None:
        model = model.to(device)
    first = next(model.parameters(), None)
    dev = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32

    was_training = model.training
    model.eval()
    try:
        flops = count_flops(model, torch.randn(1, *in_shape, device=dev, dtype=dtype))
        lat = None
        if latency:
            lat = measure_latency(model, torch.randn(batch_size, *in_shape, device=dev, dtype=dtype), runs, warmup)
    finally:
        model.train(was_training)
    return ModelSummary(
        model=type(model).__name__,
        in_shape=in_shape,
        params=count_parameters(model),
        trainable_params=count_parameters(model, trainable_only=True),
        flops=flops,
        batch_size=batch_size,
        latency_ms=lat,
        device=str(dev),
    )
