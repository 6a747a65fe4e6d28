"""Backend selection shared by every hot op (xformers style).

Each op lists its backends in priority order. A backend answers ``not_supported_reasons``
for concrete inputs (device, dtype, shape, not built); ``backend="auto"`` takes the first
with no reasons, an explicit backend that cannot take the inputs raises an error listing
them. ``SDKD_BACKEND=<name>`` overrides ``auto`` for every op that has a backend of that name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode

ENV_VAR = "SDKD_BACKEND"


def plain_eager(*xs: torch.Tensor) -> bool:
    """True for plain tensors (or parameters) outside torch.compile and any dispatch mode (fake, proxy
    tracing): an op may then skip its torch.library dispatch, which costs tens of microseconds a call."""
    return (
        all(type(x) in (torch.Tensor, torch.nn.Parameter) for x in xs)
        and not torch.compiler.is_compiling()
        and _get_current_dispatch_mode() is None
    )


class BackendUnavailableError(NotImplementedError):
    """No backend (or not the requested one) can take the given inputs."""


@dataclass
class Backend:
    """One implementation of an op.

    ``reasons(**inputs)`` returns a list of human-readable reasons why this backend cannot run
    the call (empty when it can); ``fn`` is the implementation.
    """

    name: str
    fn: Callable[..., Any]
    reasons: Callable[..., list[str]] = field(default=lambda **_: [])
    description: str = ""

    def not_supported_reasons(self, **inputs: Any) -> list[str]:
        try:
            return list(self.reasons(**inputs))
        except Exception as exc:  # a broken probe must not hide the other backends
            return [f"availability check failed: {exc!r}"]


@dataclass
class Op:
    """A hot op: an ordered list of backends ending with the plain-PyTorch ``reference``."""

    name: str
    backends: list[Backend]

    def backend_names(self) -> list[str]:
        return [b.name for b in self.backends]

    def get(self, name: str) -> Backend:
        for b in self.backends:
            if b.name == name:
                return b
        raise ValueError(f"{self.name}: unknown backend {name!r}; choose from {['auto', *self.backend_names()]}")

    def select(self, backend: str = "auto", **inputs: Any) -> Backend:
        """Pick the backend for these inputs (see module docstring)."""
        if backend == "auto":
            env = os.environ.get(ENV_VAR, "").strip()
            if env and env != "auto" and env in self.backend_names():
                backend = env
        if backend != "auto":
            chosen = self.get(backend)
            why = chosen.not_supported_reasons(**inputs)
            if why:
                raise BackendUnavailableError(
                    f"{self.name}: backend {backend!r} cannot take these inputs: " + "; ".join(why)
                )
            return chosen
        all_reasons = []
        for b in self.backends:
            why = b.not_supported_reasons(**inputs)
            if not why:
                return b
            all_reasons.append(f"{b.name}: " + "; ".join(why))
        raise BackendUnavailableError(f"{self.name}: no backend can take these inputs:\n  " + "\n  ".join(all_reasons))

    def availability(self, **inputs: Any) -> dict[str, list[str]]:
        """Reasons per backend (empty list = usable) for the given (possibly empty) inputs."""
        return {b.name: b.not_supported_reasons(**inputs) for b in self.backends}


_REGISTRY: dict[str, Op] = {}


def register_op(op: Op) -> Op:
    _REGISTRY[op.name] = op
    return op


def registered_ops() -> dict[str, Op]:
    return dict(_REGISTRY)
