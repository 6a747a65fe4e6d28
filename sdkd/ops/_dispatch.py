"""Backend selection shared by every hot op (xformers style).

Each op lists its backends in priority order. A backend answers ``not_supported_reasons``
for concrete inputs (device, dtype, shape, not built); ``backend="auto"`` takes the first
with no reasons, an explicit backend that cannot take the inputs raises an error listing
them. ``SDKD_BACKEND=<name>`` overrides ``auto`` for every op that has a backend of that name.

An op may give ``auto_key``: a key of the inputs that fixes every backend's answer (device, dtype, sizes,
options, the environment variables its probes read). ``select`` then remembers each successful pick per
(requested backend, key), so a training step does not re-run the backends' probes (tens of microseconds for
``auto``): a process's build and devices do not change. A refusal is never remembered (its error lists the
reasons each time).
"""

from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode

ENV_VAR = "SDKD_BACKEND"
_MAX_PICKS = 256  # (backend, input kind) answers remembered per op, then forgotten all at once


def plain_eager(*xs: torch.Tensor) -> bool:
    """True for plain tensors (or parameters) outside torch.compile and any dispatch mode (fake, proxy
    tracing): an op may then skip its torch.library dispatch, which costs tens of microseconds a call."""
    return (
        all(type(x) in (torch.Tensor, torch.nn.Parameter) for x in xs)
        and not torch.compiler.is_compiling()
        and _get_current_dispatch_mode() is None
    )


@functools.cache
def _warn_unknown_env(value: str) -> None:
    """Warn once per value when SDKD_BACKEND names no backend of any op (a typo would silently mean auto)."""
    known = sorted({b.name for op in _REGISTRY.values() for b in op.backends})
    if value not in known:
        warnings.warn(f"{ENV_VAR}={value!r} names no backend of any op ({', '.join(known)}); using auto", stacklevel=4)


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
    auto_key: Callable[..., Hashable] | None = None
    _picks: dict[Hashable, Backend] = field(default_factory=dict, init=False, repr=False)

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
            if env and env != "auto":
                if env in self.backend_names():
                    backend = env
                else:
                    _warn_unknown_env(env)
        key = self.auto_key(**inputs) if self.auto_key is not None else None
        if key is not None:
            key = (backend, key)
            if (hit := self._picks.get(key)) is not None:
                return hit
        chosen = self._select(backend, inputs)
        if key is not None:
            if len(self._picks) >= _MAX_PICKS:
                self._picks.clear()
            self._picks[key] = chosen
        return chosen

    def _select(self, backend: str, inputs: dict[str, Any]) -> Backend:
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

    def clear_picks(self) -> None:
        """Forget the remembered picks (after changing what a backend's probe sees, e.g. in tests)."""
        self._picks.clear()

    def availability(self, **inputs: Any) -> dict[str, list[str]]:
        """Reasons per backend (empty list = usable) for the given (possibly empty) inputs."""
        return {b.name: b.not_supported_reasons(**inputs) for b in self.backends}


_REGISTRY: dict[str, Op] = {}


def register_op(op: Op) -> Op:
    _REGISTRY[op.name] = op
    return op


def registered_ops() -> dict[str, Op]:
    return dict(_REGISTRY)
