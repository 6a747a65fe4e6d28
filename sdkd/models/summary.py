"""``summary(model, in_shape)``: parameters, FLOPs and inference latency of a forecaster.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add counts as 2 FLOPs;
ops torch has no formula for, such as custom kernels, count as 0). Latency is the median of repeated
timed forward passes in ``inference_mode`` after warm-up, with CUDA synchronisation on GPU; its spread
(90th over 10th percentile) tells whether the machine was quiet enough for the number to mean anything.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
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


#: Timings whose 90th percentile exceeds their 10th by more than this factor were disturbed (a busy machine,
#: frequency changes): the median is reported, with a warning that it is unreliable.
BUSY_SPREAD = 2.0


@dataclass(frozen=True)
class LatencyStats:
    """Wall times in milliseconds of repeated ``model(x)`` calls after warm-up: median and 10th/90th percentiles."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int

    @property
    def spread(self) -> float:
        """``p90 / p10``: about 1 on a quiet machine."""
        return self.p90_ms / self.p10_ms if self.p10_ms > 0 else float("inf")

    @property
    def reliable(self) -> bool:
        return self.spread <= BUSY_SPREAD


def latency_stats(
    model: nn.Module,
    x: torch.Tensor,
    runs: int = 5,
    warmup: int = 2,
    min_seconds: float = 0.0,
    clock: Callable[[], float] = time.perf_counter,
) -> LatencyStats:
    """Time ``model(x)``: ``warmup`` untimed calls, then at least ``runs`` timed ones, more (up to ``20 * runs``)
    until ``min_seconds`` of timed calls have passed, so short models are timed over many calls. ``clock``: seconds
    (tests pass a fake one)."""
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    times: list[float] = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        sync()
        while len(times) < runs or (sum(times) < min_seconds * 1e3 and len(times) < 20 * runs):
            t0 = clock()
            model(x)
            sync()
            times.append((clock() - t0) * 1e3)
    q = statistics.quantiles(times, n=10, method="inclusive") if len(times) > 1 else [times[0]] * 9
    return LatencyStats(median_ms=statistics.median(times), p10_ms=q[0], p90_ms=q[-1], runs=len(times))


def measure_latency(model: nn.Module, x: torch.Tensor, runs: int = 5, warmup: int = 2) -> float:
    """Median wall time in milliseconds of ``model(x)`` over ``runs`` timed calls after ``warmup`` calls."""
    return latency_stats(model, x, runs, warmup).median_ms


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
