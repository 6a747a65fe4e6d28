"""GPU-side cost of a benchmark step, next to the wall-clock time pytest-benchmark measures.

At the bench sizes one fused call moves a few MB, microseconds at HBM speed, while a call from Python
costs a few hundred microseconds of host work. Wall-clock time alone therefore says nothing about how
well a kernel uses the memory system; the profiler's device time does. Both are recorded, and
``copy_bandwidth`` gives the HBM bound measured on the same GPU in the same run.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import lru_cache

import torch


def device_time_per_call(step: Callable[[], object], calls: int = 10) -> float | None:
    """Seconds of GPU work (kernels, memsets, copies; summed, gaps excluded) per ``step()``; None without CUDA
    or when the profiler saw no GPU activity."""
    if not torch.cuda.is_available():
        return None
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    step()
    torch.cuda.synchronize()
    try:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(calls):
                step()
            torch.cuda.synchronize()
        total_us = sum(e.device_time_total for e in prof.events() if e.device_type == DeviceType.CUDA)
    except Exception as exc:  # no CUPTI, a profiler already running: the wall-clock result still stands
        warnings.warn(f"device time not measured: {exc!r}", stacklevel=2)
        return None
    return total_us * 1e-6 / calls if total_us > 0 else None


@lru_cache(maxsize=4)
def copy_bandwidth(device_index: int = 0, nbytes: int = 1 << 30) -> float | None:
    """Bytes per second (read + write) of the fastest of a few device-to-device copies of ``nbytes``: the
    practical HBM bound of this GPU; None without CUDA."""
    if not torch.cuda.is_available():
        return None
    dev = torch.device("cuda", device_index)
    src = torch.empty(nbytes, dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float("inf")
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) * 1e-3)
    del src, dst
    torch.cuda.empty_cache()
    return 2 * nbytes / best
