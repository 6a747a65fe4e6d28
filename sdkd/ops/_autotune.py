"""Measured ``auto``: time each usable (backend, internal path) of an op on the call's own inputs.

Used once per op and input kind (then remembered in memory and in the picks file, ``_tuning_cache``), so its
host syncs and extra calls are a one-off, never part of a training step after the first. Each candidate runs
``warmup`` times untimed (Triton's JIT, cuFFT plans, first-touch allocations), then up to ``reps`` timed
calls whose median counts; a candidate already ``prune_ratio`` x slower than the best so far after one timed
call is not timed further. On CUDA the time is the device's (CUDA events around the call on the current
stream), on CPU the wall clock.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode

AUTOTUNE_ENV = "SDKD_AUTOTUNE"


@dataclass(frozen=True)
class Schedule:
    """How hard each candidate is timed."""

    warmup: int = 1
    reps: int = 3
    prune_ratio: float = 4.0


DEFAULT_SCHEDULE = Schedule()


def autotune_enabled() -> bool:
    """False under ``SDKD_AUTOTUNE=0`` (the static order) and under ``torch.use_deterministic_algorithms(True)``,
    where a timing-dependent pick would make runs differ; the static order is stable across runs and machines."""
    if os.environ.get(AUTOTUNE_ENV, "1").strip().lower() in ("0", "false", "off", "no"):
        return False
    return not torch.are_deterministic_algorithms_enabled()


def may_time(tensors: list[torch.Tensor]) -> bool:
    """Whether timing calls is allowed now: plain eager tensors, no torch.compile tracing or dispatch mode
    (fake/proxy tensors have no time; a tracer would record the timing calls), no CUDA graph capture."""
    if torch.compiler.is_compiling() or _get_current_dispatch_mode() is not None:
        return False
    if any(type(x) not in (torch.Tensor, torch.nn.Parameter) for x in tensors):
        return False
    if any(x.is_cuda for x in tensors) and torch.cuda.is_current_stream_capturing():
        return False
    return True


def measure(
    candidates: list[tuple[str, Callable[[], object]]],
    device: torch.device,
    schedule: Schedule = DEFAULT_SCHEDULE,
) -> dict[str, float | None]:
    """Median seconds per call of each ``(label, call)``; None for a candidate that raised (it is skipped)."""
    timer = _cuda_timer if device.type == "cuda" else _wall_timer
    out: dict[str, float | None] = {}
    best = float("inf")
    for label, call in candidates:
        try:
            for _ in range(schedule.warmup):
                call()
            times = []
            for _ in range(schedule.reps):
                times.append(timer(call, device))
                if times[0] > schedule.prune_ratio * best:
                    break
        except Exception:  # a candidate that cannot run these inputs after all (OOM, compile error) is not a pick
            out[label] = None
            continue
        out[label] = statistics.median(times)
        best = min(best, out[label])
    return out


def _wall_timer(call: Callable[[], object], device: torch.device) -> float:
    del device
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _cuda_timer(call: Callable[[], object], device: torch.device) -> float:
    with torch.cuda.device(device):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        call()
        end.record()
        end.synchronize()  # a one-off (tuning), never in a step after the first call
        return start.elapsed_time(end) / 1e3
