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

Measured ``auto`` (issue 18): an op that gives ``tuning`` has its ``auto`` pick *timed* on the first call of each
input kind (``auto_key`` plus ``tuning.key``: sizes, options, whether autograd runs): every usable backend and
every internal path it offers (``Backend.paths``), the reference included, each run as the caller will run it
(``tuning.bench``: forward and backward when autograd will run), the fastest kept. Picks are remembered in
memory and in the picks file (``_tuning_cache``) for the next process on the same machine and versions; a saved
pick is used only if that backend still takes the inputs and still offers that path. ``SDKD_AUTOTUNE=0`` and
``torch.use_deterministic_algorithms(True)`` give the static order (the first usable backend, its hand-set
path); under torch.compile tracing or a dispatch mode nothing is timed (the pick this process already made for
that input, else the static order). ``backend="name:path"`` (or ``SDKD_BACKEND=name:path``) forces one internal path.
"""

from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Hashable

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode

from ._autotune import autotune_enabled, may_time, measure
from ._ext import triton_installed
from ._tuning_cache import TUNING_CACHE, machine_key

ENV_VAR = "SDKD_BACKEND"

#: Every op's ``check`` argument defaults to this and means the same thing: the op's tensors that must be finite
#: (its inputs; for a loss, the loss value, whose failure names the inputs) are asserted finite *on the device*
#: (``sdkd.ops._device_checks``): no host read, so it costs a few small device ops, never a sync. On the CPU a
#: failure raises ``ValueError`` naming the tensor; on CUDA it is a device-side assert. ``check=False`` skips it
#: (a model's inner calls do, since the loss downstream is checked anyway).
CHECK_DEFAULT = True
_MAX_PICKS = 256  # (backend, input kind) answers remembered per op, then forgotten all at once


def plain_eager(*xs: torch.Tensor) -> bool:
    """True for plain tensors (or parameters) outside torch.compile and any dispatch mode (fake, proxy
    tracing): an op may then skip its torch.library dispatch, which costs tens of microseconds a call."""
    return (
        all(type(x) in (torch.Tensor, torch.nn.Parameter) for x in xs)
        and not torch.compiler.is_compiling()
        and _get_current_dispatch_mode() is None
    )


def backend_name(backend: str) -> str:
    """The backend part of ``"name"`` or ``"name:path"``."""
    return backend.partition(":")[0]


def requested_backend(backend: str) -> str:
    """What the caller asked for: ``backend`` itself, or for ``"auto"`` the ``SDKD_BACKEND`` value (else "auto").
    The probes use it to tell a backend asked for by name (e.g. Triton's interpreter on CPU) from ``auto``."""
    if backend != "auto":
        return backend
    return os.environ.get(ENV_VAR, "").strip() or "auto"


TRITON_INTERPRET_ENV = "TRITON_INTERPRET"


def triton_interpreter_on() -> bool:
    """Whether Triton kernels run in its CPU interpreter (``TRITON_INTERPRET=1``, set before triton's import)."""
    return os.environ.get(TRITON_INTERPRET_ENV) == "1"


def triton_reasons(x: torch.Tensor | None, requested: str = "auto") -> list[str]:
    """The Triton rule of every op: triton installed; CUDA tensors, or CPU tensors in the interpreter only when
    ``triton`` is asked for by name (``requested``: see ``requested_backend``); the interpreter is for tests, far
    slower than any other backend, so ``auto`` never takes it. The op adds its own dtype and shape limits."""
    if not triton_installed():
        return ["triton is not installed"]
    if x is None:
        ok = torch.cuda.is_available() or triton_interpreter_on()
        return [] if ok else ["no CUDA GPU (Triton runs on CPU only under TRITON_INTERPRET=1)"]
    if x.device.type == "cuda":
        return []
    if x.device.type != "cpu":
        return [f"needs CUDA tensors, got {x.device}"]
    if not triton_interpreter_on():
        return ["needs CUDA tensors (CPU tensors only under TRITON_INTERPRET=1)"]
    if backend_name(requested) != "triton":
        return ["CPU tensors run in the Triton interpreter only when backend='triton' is requested"]
    return []


def interpreter_key(requested: str) -> tuple[bool, str | None]:
    """The part of an op's ``auto_key`` the Triton rule reads: triton asked for by name, the interpreter switch."""
    return backend_name(requested) == "triton", os.environ.get(TRITON_INTERPRET_ENV)


def raw_stream(device: torch.device) -> int:
    """The current CUDA stream of ``device`` as an integer handle for the extension (the private accessor torch's
    own compiled code uses when present: a fraction of ``torch.cuda.current_stream``'s cost)."""
    raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
    index = device.index if device.index is not None else torch.cuda.current_device()
    if raw is not None:
        return raw(index)
    return torch.cuda.current_stream(device).cuda_stream


@functools.cache
def _warn_unknown_env(value: str) -> None:
    """Warn once per value when SDKD_BACKEND names no backend of any op (a typo would silently mean auto)."""
    known = sorted({b.name for op in _REGISTRY.values() for b in op.backends})
    if backend_name(value) not in known:
        warnings.warn(f"{ENV_VAR}={value!r} names no backend of any op ({', '.join(known)}); using auto", stacklevel=4)


class BackendUnavailableError(NotImplementedError):
    """No backend (or not the requested one) can take the given inputs."""


@dataclass
class Backend:
    """One implementation of an op.

    ``reasons(**inputs)`` returns a list of human-readable reasons why this backend cannot run
    the call (empty when it can); ``fn`` is the implementation. ``paths(**inputs)``, when given, lists the
    internal paths ``fn`` can take for these inputs (``fn(..., path=name)`` forces one; without ``path`` it
    takes its hand-set static choice). ``path`` is set on the copy ``select`` returns for a chosen path.
    """

    name: str
    fn: Callable[..., Any]
    reasons: Callable[..., list[str]] = field(default=lambda **_: [])
    description: str = ""
    paths: Callable[..., list[str]] | None = None
    path: str | None = None

    @property
    def label(self) -> str:
        """``name`` or ``name:path``."""
        return self.name if self.path is None else f"{self.name}:{self.path}"

    def not_supported_reasons(self, **inputs: Any) -> list[str]:
        try:
            return list(self.reasons(**inputs))
        except Exception as exc:  # a broken probe must not hide the other backends
            return [f"availability check failed: {exc!r}"]

    def runnable_paths(self, **inputs: Any) -> list[str]:
        """The internal paths offered for these inputs (empty when the backend has one path)."""
        if self.paths is None:
            return []
        try:
            return list(self.paths(**inputs))
        except Exception:  # a broken probe offers nothing extra; the static path still runs
            return []

    def with_path(self, path: str) -> Backend:
        """This backend bound to one internal path."""
        return replace(self, fn=functools.partial(self.fn, path=path), path=path)


@dataclass(frozen=True)
class Tuning:
    """How an op's ``auto`` pick is measured.

    ``key(**inputs)``: what the timing depends on beyond ``auto_key`` (sizes, options, autograd), hashable and
    with a stable ``repr`` (it names the saved pick). ``bench(backend, **inputs)``: a no-argument callable
    running that (bound) ``Backend`` on (copies of) the inputs as the caller will, forward and backward when
    autograd will run.
    """

    key: Callable[..., Hashable]
    bench: Callable[..., Callable[[], object]]


@dataclass
class Op:
    """A hot op: an ordered list of backends ending with the plain-PyTorch ``reference``."""

    name: str
    backends: list[Backend]
    auto_key: Callable[..., Hashable] | None = None
    tuning: Tuning | None = None
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
                if backend_name(env) in self.backend_names():
                    backend = env
                else:
                    _warn_unknown_env(env)
        key = self.auto_key(**inputs) if self.auto_key is not None else None
        if key is None or ":" in backend:  # a forced path depends on sizes auto_key leaves out: checked every call
            return self._select(backend, inputs)
        if backend == "auto" and self.tuning is not None and autotune_enabled():
            tuned_key = ("tuned", key, self.tuning.key(**inputs))
            if (hit := self._picks.get(tuned_key)) is not None:
                return hit
            chosen = self._tuned(key, tuned_key[2], inputs)
            if chosen is not None:
                self._remember(tuned_key, chosen)
                return chosen
        key = (backend, key)
        if (hit := self._picks.get(key)) is not None:
            return hit
        chosen = self._select(backend, inputs)
        self._remember(key, chosen)
        return chosen

    def _remember(self, key: Hashable, chosen: Backend) -> None:
        if len(self._picks) >= _MAX_PICKS:
            self._picks.clear()
        self._picks[key] = chosen

    def _select(self, backend: str, inputs: dict[str, Any]) -> Backend:
        if backend != "auto":
            name, _, path = backend.partition(":")
            chosen = self.get(name)
            why = chosen.not_supported_reasons(**inputs)
            if why:
                raise BackendUnavailableError(
                    f"{self.name}: backend {name!r} cannot take these inputs: " + "; ".join(why)
                )
            if path:
                offered = chosen.runnable_paths(**inputs)
                if path not in offered:
                    raise BackendUnavailableError(
                        f"{self.name}: backend {name!r} has no path {path!r} for these inputs; "
                        f"choose from {offered or ['(none: it has a single path)']}"
                    )
                return chosen.with_path(path)
            return chosen
        all_reasons = []
        for b in self.backends:
            why = b.not_supported_reasons(**inputs)
            if not why:
                return b
            all_reasons.append(f"{b.name}: " + "; ".join(why))
        raise BackendUnavailableError(f"{self.name}: no backend can take these inputs:\n  " + "\n  ".join(all_reasons))

    def candidates(self, **inputs: Any) -> list[Backend]:
        """Every usable (backend, path) for these inputs, in the static order, the reference included."""
        out = []
        for b in self.backends:
            if b.not_supported_reasons(**inputs):
                continue
            paths = b.runnable_paths(**inputs)
            out.extend([b.with_path(p) for p in paths] if paths else [b])
        return out

    def _saved_key(self, key: Hashable, tune_key: Hashable, device: torch.device) -> str:
        return f"{self.name} | {machine_key(device)} | {key!r} | {tune_key!r}"

    def _tuned(self, key: Hashable, tune_key: Hashable, inputs: dict[str, Any]) -> Backend | None:
        """The saved pick if it still applies, else a measured one; None when timing is not allowed here."""
        tensors = [x for x in inputs.values() if isinstance(x, torch.Tensor)]
        if not tensors:
            return None
        if not may_time(tensors):
            return None  # tracing: the static order (or what this process measured already)
        saved_key = self._saved_key(key, tune_key, tensors[0].device)
        saved = TUNING_CACHE.get(saved_key)
        if saved is not None and (chosen := self._validated(saved, inputs)) is not None:
            return chosen
        candidates = self.candidates(**inputs)
        if len(candidates) <= 1:
            return candidates[0] if candidates else None
        runs = [(c.label, self.tuning.bench(c, **inputs)) for c in candidates]
        times = measure(runs, tensors[0].device)
        timed = [(t, i) for i, t in enumerate(times.values()) if t is not None]
        if not timed:
            return None
        chosen = candidates[min(timed)[1]]
        TUNING_CACHE.put(
            saved_key,
            {
                "backend": chosen.name,
                "path": chosen.path,
                "ms": {k: None if t is None else t * 1e3 for k, t in times.items()},
            },
        )
        return chosen

    def _validated(self, saved: dict[str, Any], inputs: dict[str, Any]) -> Backend | None:
        """The saved pick as a backend, or None when it no longer applies (unknown name, refuses the inputs, path
        not offered): a wrong or stale entry never selects a backend that cannot take the call."""
        name, path = saved.get("backend"), saved.get("path")
        b = next((b for b in self.backends if b.name == name), None)
        if b is None or b.not_supported_reasons(**inputs):
            return None
        if path is None:
            return b if not b.runnable_paths(**inputs) else None
        return b.with_path(path) if path in b.runnable_paths(**inputs) else None

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


def tuned_picks() -> dict[str, dict[str, Any]]:
    """The saved measured picks (``sdkd info``): ``{"op | machine | kind": {"backend", "path", "ms"}}``."""
    return TUNING_CACHE.entries()
