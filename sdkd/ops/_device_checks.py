"""Value checks that never read a tensor back to the host on the success path (DESIGN.md section 2).

A training step must not stall the device behind Python, so checks of tensor *values* (finite,
symmetric, PSD...) are asserted on the device with ``torch._assert_async``: on a GPU a failed check
is a device-side assert (reported at the next synchronisation); on the CPU it raises at once, and
:func:`assert_on_device` then calls ``diagnose`` to raise the precise error (reads are fine there,
the step is failing anyway). Under ``torch.compile`` only the asynchronous assert is emitted.
"""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["assert_on_device"]


def assert_on_device(ok: torch.Tensor, message: str, diagnose: Callable[[], None] | None = None) -> None:
    """Assert the boolean tensor ``ok`` (any shape, all must be True) without a host read.

    ``message`` is the assert's text; ``diagnose`` (CPU, eager only) is called when the assert fails
    and should raise the error that names the culprit; if it returns, ``FloatingPointError(message)``
    is raised. On CUDA a failure is a device-side assert (fatal for the CUDA context, as any
    asynchronous error is).
    """
    cond = ok.all() if ok.dim() else ok
    if ok.device.type != "cpu" or torch.compiler.is_compiling():
        torch._assert_async(cond, message)
        return
    try:
        torch._assert_async(cond, message)
    except RuntimeError:
        if diagnose is not None:
            diagnose()
        raise FloatingPointError(message) from None
