"""Metric loggers: where the fit loop's per-epoch metrics go besides ``metrics.csv`` / ``metrics.jsonl``.

A logger is any object with ``log_metrics(metrics, step)`` and ``close()`` (the ``MetricLogger`` protocol),
so TensorBoard, Weights & Biases, MLflow or a user's own sink plug into ``Trainer(loggers=[...])`` without
sdkd depending on any of them. ``TensorBoardLogger`` ships with sdkd (``pip install 'sdkd[tensorboard]'``);
``CallbackLogger`` wraps a function, which is all W&B or MLflow need (README "Logging").
Loggers run on rank 0 only and see plain Python floats, read once per epoch: never a device tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable


@runtime_checkable
class MetricLogger(Protocol):
    """Receives one row of metrics per epoch (``step`` = the epoch number, from 1)."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def close(self) -> None: ...


def scalar_metrics(metrics: Mapping[str, object]) -> dict[str, float]:
    """The numeric entries of a metrics row, as floats (the epoch counter and non-numbers left out)."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


class CallbackLogger:
    """A logger from a function ``fn(metrics, step)``; e.g. ``CallbackLogger(lambda m, s: wandb.log(m, step=s))``."""

    def __init__(self, fn: Callable[[dict[str, float], int], None], close: Callable[[], None] | None = None):
        self._fn, self._close = fn, close

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self._fn(scalar_metrics(metrics), step)

    def close(self) -> None:
        if self._close is not None:
            self._close()


class TensorBoardLogger:
    """Scalars for TensorBoard (``tensorboard --logdir DIR``) through ``torch.utils.tensorboard``.

    Non-finite values are written as they are (TensorBoard shows them), so a diverging run is visible there too.
    """

    def __init__(self, log_dir: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # torch raises ImportError naming tensorboard when it is missing
            raise ModuleNotFoundError(
                "TensorBoard logging needs the optional package 'tensorboard': pip install 'sdkd[tensorboard]'",
                name="tensorboard",
            ) from exc
        self.log_dir = Path(log_dir)
        self._writer = SummaryWriter(log_dir=str(self.log_dir))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        for key, value in scalar_metrics(metrics).items():
            self._writer.add_scalar(key, value, global_step=step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


#: Loggers a config can name (``train.loggers: [tensorboard]``), each built from the run's output folder.
LOGGERS: dict[str, Callable[[Path], MetricLogger]] = {
    "tensorboard": lambda out_dir: TensorBoardLogger(Path(out_dir) / "tensorboard"),
}


def build_loggers(names: Iterable[str], out_dir: str | Path) -> list[MetricLogger]:
    """The loggers a config names, writing under ``out_dir``; an unknown name is a ValueError listing the choices."""
    loggers = []
    for name in names:
        if name not in LOGGERS:
            raise ValueError(f"unknown logger {name!r} in train.loggers; choose from {sorted(LOGGERS)}")
        loggers.append(LOGGERS[name](Path(out_dir)))
    return loggers
