"""Progress display of the training commands: tqdm bars and the stage/ETA line of multi-stage runs.

One rule decides whether a bar is shown, for the fit loop, the teacher cache build, evaluation and data
generation alike (:func:`progress_enabled`): ``train.progress`` is true, this is rank 0, and stderr is a
terminal (a log file or a pipe gets no bar redraws). Bars never read tensors back from the device: they count
steps, and show the loss only when the fit loop reads it anyway.

:class:`StageProgress` prints one line per epoch for ``sdkd demo``/``sdkd reproduce``, e.g.
``stage 2/3 baseline: epoch 4/30, ~1:40 left in this stage, ~6:10 in all``; the estimate is the measured
seconds per epoch times the epochs left, and a stage not timed yet borrows the per-epoch time of a timed
stage with the same model (and, failing that, is reported as not timed yet).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import Any


def progress_enabled(setting: Any = True, is_main: bool = True) -> bool:
    """Whether to draw progress bars: ``setting`` (``train.progress``) is true, on rank 0, with stderr a terminal."""
    if not setting or not is_main:
        return False
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def progress_bar(total: int, desc: str, enabled: bool, unit: str = "it", leave: bool = False):
    """A tqdm bar on stderr, or ``None`` when ``enabled`` is false (callers test for ``None``)."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=leave, file=sys.stderr, dynamic_ncols=True)


def close_bars() -> None:
    """Close every tqdm bar still open (a loop stopped by Ctrl-C leaves its bar drawn), so that the next
    line printed starts on a clean line."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return
    for bar in list(getattr(tqdm, "_instances", ())):
        try:
            bar.close()
        except Exception:  # noqa: BLE001 - a half-built bar must not hide the message that follows
            pass


def format_duration(seconds: float) -> str:
    """``95.2`` -> ``1:35``, ``3725`` -> ``1:02:05`` (rounded up to the second)."""
    s = max(0, int(-(-seconds // 1)))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class StageProgress:
    """The overall position and time estimate of a run of several training stages.

    ``stages`` maps each stage's name to ``(epochs, model name)`` in running order. Call :meth:`start` before a
    stage trains (or is reused), and pass :meth:`epoch_done` to the fit loop (``on_epoch_end``): after each
    epoch it logs ``stage i/n NAME: epoch e/E, ~m:ss left in this stage, ~m:ss in all``.
    """

    def __init__(
        self,
        stages: Mapping[str, tuple[int, str]],
        log: Callable[[str], None] = print,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.stages = dict(stages)
        self.order = list(self.stages)
        self.log = log
        self.clock = clock
        self.current: str | None = None
        self.done: dict[str, int] = dict.fromkeys(self.order, 0)  # epochs finished per stage
        self.seconds: dict[str, list[float]] = {name: [] for name in self.order}  # timed epochs per stage
        self._epoch_start = 0.0

    @property
    def index(self) -> int:
        """1-based position of the current stage."""
        return self.order.index(self.current) + 1 if self.current else 0

    def label(self, name: str | None = None) -> str:
        """``stage 2/3 baseline``."""
        name = name or self.current
        return f"stage {self.order.index(name) + 1}/{len(self.order)} {name}"

    def start(self, name: str) -> None:
        """``name`` starts (or resumes, or is reused); the stages before it count as finished."""
        self.current = name
        for earlier in self.order[: self.order.index(name)]:
            self.done[earlier] = self.stages[earlier][0]
        self._epoch_start = self.clock()

    def epoch_done(self, epoch: int, epochs: int, seconds: float | None = None) -> None:
        """The fit loop finished epoch ``epoch`` (1-based) of ``epochs``; ``seconds`` it took (default: the time
        since the previous call or :meth:`start`). Logs the stage/ETA line."""
        now = self.clock()
        took = now - self._epoch_start if seconds is None else seconds
        self._epoch_start = now
        name = self.current
        if name is None:
            return
        self.stages[name] = (epochs, self.stages[name][1])
        self.done[name] = epoch
        self.seconds[name].append(took)
        self.log(self.line())

    def per_epoch(self, name: str) -> float | None:
        """Estimated seconds per epoch of stage ``name``: its own mean, else that of a timed stage with the same
        model (the latest), else ``None``."""
        if self.seconds[name]:
            return sum(self.seconds[name]) / len(self.seconds[name])
        model = self.stages[name][1]
        for other in reversed(self.order):
            if self.stages[other][1] == model and self.seconds[other]:
                return sum(self.seconds[other]) / len(self.seconds[other])
        return None

    def line(self) -> str:
        """``stage 2/3 baseline: epoch 4/30, ~1:40 left in this stage, ~6:10 in all``."""
        name = self.current
        assert name is not None
        epochs = self.stages[name][0]
        left_here = (epochs - self.done[name]) * (self.per_epoch(name) or 0.0)
        text = f"{self.label()}: epoch {self.done[name]}/{epochs}, ~{format_duration(left_here)} left in this stage"
        later = self.order[self.order.index(name) + 1 :]
        if not later:
            return text
        estimates = [(self.stages[s][0] - self.done[s], self.per_epoch(s)) for s in later]
        untimed = sum(1 for _, per in estimates if per is None)
        total = left_here + sum(n * per for n, per in estimates if per is not None)
        if untimed == len(later):
            return f"{text}; later stages not timed yet"
        tail = f" + {untimed} stage(s) not timed yet" if untimed else ""
        return f"{text}, ~{format_duration(total)} in all{tail}"
