"""One fit loop for every stage (teacher pretraining, student baseline, distillation).

The loop is model-agnostic: it optimises ``model`` (plus optional ``extra_modules`` such as
distillation adapters) with a ``loss_fn(batch, model) -> dict(loss=..., logs=...)`` and
validates with ``val_fn(batch, model) -> (sum of squared errors, count)``. Each epoch it
writes ``last.pt`` (for ``resume``), keeps ``best.pt`` (lowest validation loss), and rewrites
``metrics.csv`` and ``metrics.jsonl`` from the checkpoint's history (atomically, so they always
match it); each epoch's row also goes to any ``loggers`` (see ``sdkd.train.loggers``). Data order
depends only on (seed, epoch), so a resumed run ends with the same weights as an uninterrupted one.
A non-finite training loss or validation MSE (a diverging run) stops the fit at the end of its
epoch, before anything of that epoch is saved.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from sdkd.data.cache import atomic_path
from sdkd.errors import SdkdError

from .checkpoint import CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .distributed import DistInfo, all_reduce_sum, barrier
from .interrupt import Interrupted
from .loggers import MetricLogger
from .progress import progress_bar, progress_enabled
from .schema import check_section

LossFn = Callable[[Any, nn.Module], Mapping[str, Any]]
ValFn = Callable[[Any, nn.Module], tuple[torch.Tensor, int]]

#: ``train.scheduler`` values: the learning-rate schedules ``_make_scheduler`` builds
SCHEDULERS = ("none", "cosine", "onecycle")


class TrainingDiverged(SdkdError, FloatingPointError):
    """The training loss became non-finite (NaN or inf): the run diverged."""


@dataclass
class FitResult:
    best_val: float
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    history: list[dict] = field(default_factory=list)
    best_path: Path | None = None
    last_path: Path | None = None


def default_val_fn(batch: Any, model: nn.Module) -> tuple[torch.Tensor, int]:
    x, y = batch[-2], batch[-1]
    pred = model(x)
    return (pred.float() - y.float()).square().sum(), y.numel()


def default_loss_fn(batch: Any, model: nn.Module) -> dict[str, Any]:
    x, y = batch[-2], batch[-1]
    loss = nn.functional.mse_loss(model(x), y)
    return {"loss": loss, "logs": {"task": loss.detach()}}


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def _make_scheduler(opt: torch.optim.Optimizer, cfg: Mapping, steps_per_epoch: int):
    total = max(1, cfg["epochs"] * steps_per_epoch)
    warm = max(0, int(cfg.get("warmup_epochs", 0) or 0) * steps_per_epoch)
    kind = cfg.get("scheduler", "none")
    if kind not in SCHEDULERS:
        raise ValueError(f"train.scheduler must be one of {', '.join(SCHEDULERS)}, got {kind!r}")
    if kind == "none":
        return None
    if kind == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg["lr"], total_steps=total)

    def cosine(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, total - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(opt, cosine)


class _LossWindow:
    """The training loss of the steps since the last log, kept on the device: its sum, the step count and the
    first step whose loss was not finite (-1: none). :meth:`read` is the interval's one host read."""

    def __init__(self, device: torch.device):
        self.device = device
        self._reset()

    def _reset(self) -> None:
        self.total = torch.zeros((), dtype=torch.float64, device=self.device)
        self.first_bad = torch.full((), -1.0, dtype=torch.float64, device=self.device)
        self.count = 0

    def add(self, loss: torch.Tensor, step: int) -> None:
        value = loss.to(torch.float64).reshape(-1).sum()
        self.total = self.total + value
        newly_bad = (self.first_bad < 0) & ~torch.isfinite(value)
        self.first_bad = torch.where(newly_bad, float(step), self.first_bad)
        self.count += 1

    def read(self, epoch: int, trainer: Trainer) -> float:
        """Mean loss of the interval (one host read). A non-finite loss on any process (the flags are summed
        over processes, so all of them stop together) raises ``TrainingDiverged`` naming the first such step."""
        flags = all_reduce_sum((self.first_bad >= 0).to(torch.float64).reshape(1), trainer.dist)
        total, first_bad, any_bad = torch.cat([self.total.reshape(1), self.first_bad.reshape(1), flags]).tolist()
        count = max(self.count, 1)
        self._reset()
        if any_bad > 0:
            where = f"step {int(first_bad)}" if first_bad >= 0 else "a step of another process"
            raise TrainingDiverged(
                f"training diverged: non-finite training loss at epoch {epoch + 1}, {where} (train.lr="
                f"{trainer.cfg['lr']}); lower train.lr or set train.clip_grad; the checkpoints hold the last finite epoch"
            )
        return total / count


def patience_spent(bad_epochs: int, patience: int) -> bool:
    """Early stopping: ``patience`` > 0 epochs in a row without a better validation MSE (0: never stop)."""
    return patience > 0 and bad_epochs >= patience


class Trainer:
    """Fit ``model`` on ``train_set`` with early stopping on ``val_set`` (see module docstring).

    ``batch_to_device(batch, device)`` moves a batch before ``loss_fn``/``val_fn`` see it (default: every
    tensor); the distillation stage keeps its sample indices on the host with it, so that a step never
    copies them back. ``train.log_every``: steps between the reads of the training loss (progress bar and
    the non-finite check, which names the step); no other step reads a value back to the host.
    """

    def __init__(
        self,
        model: nn.Module,
        train_set: Dataset,
        val_set: Dataset,
        train_cfg: Mapping[str, Any],
        out_dir: str | Path,
        *,
        batch_size: int = 16,
        seed: int = 42,
        loss_fn: LossFn = default_loss_fn,
        val_fn: ValFn = default_val_fn,
        extra_modules: Mapping[str, nn.Module] | None = None,
        extra_state: Mapping[str, Any] | None = None,
        device: str | torch.device | None = None,
        dist_info: DistInfo | None = None,
        num_workers: int = 0,
        log: Callable[[str], None] = print,
        batch_to_device: Callable[[Any, torch.device], Any] = to_device,
        loggers: Iterable[MetricLogger] = (),
        on_epoch_end: Callable[[int, int, float], None] | None = None,
    ):
        self.dist = dist_info or DistInfo()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.cfg = check_section("train", train_cfg)  # e.g. max_steps_per_epoch=-1 would train nothing
        self.model = model.to(self.device)
        self.extra = nn.ModuleDict(dict(extra_modules or {})).to(self.device)
        self.extra_state = dict(extra_state or {})
        self.loss_fn, self.val_fn = loss_fn, val_fn
        self.batch_to_device = batch_to_device
        self.log_every = self.cfg.get("log_every", 50)
        if isinstance(self.log_every, bool) or not isinstance(self.log_every, int) or self.log_every < 1:
            raise ValueError(
                f"train.log_every must be an integer >= 1 (steps between loss reads), got {self.log_every!r}"
            )
        self.out_dir = Path(out_dir)
        self.seed = seed
        self.log = log if self.dist.is_main else (lambda _msg: None)
        self.loggers = list(loggers) if self.dist.is_main else []  # rank 0 logs, as it writes metrics.csv
        self.on_epoch_end = on_epoch_end if self.dist.is_main else None  # (epoch done, epochs, seconds)
        self._at: tuple[int, int | None] | None = None  # (epoch, step) now running, for the Ctrl-C message
        if batch_size % self.dist.world_size:
            raise ValueError(f"batch_size {batch_size} must be divisible by the world size {self.dist.world_size}")
        self.local_batch = batch_size // self.dist.world_size
        self.train_sampler = DistributedSampler(
            train_set, num_replicas=self.dist.world_size, rank=self.dist.rank, shuffle=True, seed=seed, drop_last=True
        )
        self.val_sampler = DistributedSampler(
            val_set, num_replicas=self.dist.world_size, rank=self.dist.rank, shuffle=False, drop_last=False
        )
        pin = self.device.type == "cuda"
        self.train_loader = DataLoader(
            train_set, self.local_batch, sampler=self.train_sampler, num_workers=num_workers, pin_memory=pin
        )
        self.val_loader = DataLoader(
            val_set, self.local_batch, sampler=self.val_sampler, num_workers=num_workers, pin_memory=pin
        )
        if len(self.train_loader) == 0:
            raise ValueError("the training set is smaller than one batch per process")
        self.wrapped = self.model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.wrapped = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        params = [p for p in list(self.model.parameters()) + list(self.extra.parameters()) if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=self.cfg["lr"], weight_decay=self.cfg.get("weight_decay", 0.0))
        steps = len(self.train_loader)
        if self.cfg.get("max_steps_per_epoch"):
            steps = min(steps, int(self.cfg["max_steps_per_epoch"]))
        self.steps_per_epoch = steps
        self.scheduler = _make_scheduler(self.optimizer, self.cfg, steps)
        self.amp = bool(self.cfg.get("amp", True)) and self.device.type == "cuda"

    # ------------------------------------------------------------------ state
    def _state(self, epoch: int, best_val: float, best_epoch: int, bad_epochs: int, history: list) -> dict:
        return {
            "model": self.model.state_dict(),
            "extra": self.extra.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "epoch": epoch,
            "best_val": best_val,
            "best_epoch": best_epoch,
            "bad_epochs": bad_epochs,
            "rng": rng_state(),
            "metrics": history,
            **self.extra_state,
        }

    def _restore(self, path: Path) -> tuple[int, float, int, int, list]:
        ck = load_checkpoint(path, map_location=self.device)
        try:
            self.model.load_state_dict(ck["model"])
            self.extra.load_state_dict(ck.get("extra", {}))
            self.optimizer.load_state_dict(ck["optimizer"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise CheckpointError(f"checkpoint {str(path)!r} does not match this model/config: {exc}") from None
        if self.scheduler is not None and ck.get("scheduler") is not None:
            self.scheduler.load_state_dict(ck["scheduler"])
        set_rng_state(ck["rng"])
        return ck["epoch"], ck["best_val"], ck["best_epoch"], ck["bad_epochs"], list(ck["metrics"])

    # ------------------------------------------------------------------ loop
    def _train_epoch(self, epoch: int) -> dict[str, float]:
        """One epoch of optimiser steps. No step reads a tensor back to the host (DESIGN.md section 2): the
        logged terms are summed on the device, and the loss is read once every ``train.log_every`` steps
        (progress bar, and the finiteness check that names the first non-finite step)."""
        self.model.train()
        self.extra.train()
        self.train_sampler.set_epoch(epoch)
        sums: dict[str, torch.Tensor] = {}
        n = 0
        enabled = progress_enabled(self.cfg.get("progress", True), self.dist.is_main)
        bar = progress_bar(self.steps_per_epoch, f"epoch {epoch + 1}/{self.cfg['epochs']}", enabled, unit="step")
        log_every = self.log_every
        window = _LossWindow(self.device)
        for step, batch in enumerate(self.train_loader):
            if step >= self.steps_per_epoch:
                break
            self._at = (epoch, step)
            batch = self.batch_to_device(batch, self.device)
            self.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                out = self.loss_fn(batch, self.wrapped)
            loss = out["loss"]
            window.add(loss.detach(), step)
            if not out.get("grads_ready", False):
                loss.backward()
            clip = self.cfg.get("clip_grad", 0) or 0
            if clip > 0:
                nn.utils.clip_grad_norm_(self.optimizer.param_groups[0]["params"], clip)
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
            logs = {"loss": loss.detach(), **dict(out.get("logs", {}))}
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + torch.as_tensor(v, dtype=torch.float64, device=self.device).detach()
            n += 1
            if bar is not None:
                bar.update(1)  # counts steps; the loss shown is the one read every log_every steps anyway
            if n % log_every == 0 or n == self.steps_per_epoch:
                mean_loss = window.read(epoch, self)  # the interval's one host read; raises on a non-finite loss
                if bar is not None:
                    bar.set_postfix(loss=f"{mean_loss:.4g}")
        if bar is not None:
            bar.close()
        self._at = (epoch, None)  # the training steps are done: validating, saving
        keys = sorted(sums)
        count = torch.full((), float(n), dtype=torch.float64, device=self.device)  # a fill: no host-to-device copy
        vec = torch.stack([sums[k] for k in keys] + [count])
        vec = all_reduce_sum(vec, self.dist).tolist()
        return {f"train_{k}": vec[i] / vec[-1] for i, k in enumerate(keys)}

    @torch.no_grad()
    def validate(self) -> float:
        self.model.eval()
        total = torch.zeros(2, dtype=torch.float64, device=self.device)
        for batch in self.val_loader:
            batch = self.batch_to_device(batch, self.device)
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                sse, count = self.val_fn(batch, self.model)
            total[0] += sse.double()
            total[1] += count
        total = all_reduce_sum(total, self.dist)
        return (total[0] / total[1].clamp_min(1)).item()

    def fit(self, resume: bool = False) -> FitResult:
        """Train for ``train.epochs`` (from ``last.pt`` if ``resume``). Ctrl-C raises :class:`Interrupted`
        naming the epoch and step and ``last.pt`` (written atomically: it holds the last finished epoch)."""
        try:
            return self._fit(resume)
        except Interrupted:
            raise
        except KeyboardInterrupt:
            raise self._interrupted() from None

    def _interrupted(self) -> Interrupted:
        last = self.out_dir / "last.pt"
        if self._at is None:
            return Interrupted(["loading the checkpoint" if last.is_file() else "the start of training"], last)
        epoch, step = self._at
        where = f"epoch {epoch + 1}/{self.cfg['epochs']}"
        where += (
            f" at step {step + 1}/{self.steps_per_epoch}"
            if step is not None
            else " after its training steps (validating or saving)"
        )
        return Interrupted([where], last)

    def _fit(self, resume: bool) -> FitResult:
        last_path, best_path = self.out_dir / "last.pt", self.out_dir / "best.pt"
        start, best_val, best_epoch, bad, history = 0, math.inf, -1, 0, []
        if resume and last_path.is_file():
            done, best_val, best_epoch, bad, history = self._restore(last_path)
            start = done + 1
            self.log(f"resumed from {last_path} after epoch {done + 1}")
        elif resume:
            self.log(f"no checkpoint at {last_path}; starting from scratch")
        patience = int(self.cfg.get("patience", 0) or 0)
        stopped = patience_spent(bad, patience)
        epoch = start - 1
        for epoch in range(start, self.cfg["epochs"]):
            if stopped:
                break
            t0 = time.perf_counter()
            row = {"epoch": epoch + 1, **self._train_epoch(epoch)}
            row["val_mse"] = self.validate()
            if not math.isfinite(row["val_mse"]):  # the last steps' updates overflowed the weights
                raise TrainingDiverged(
                    f"training diverged: non-finite validation MSE after epoch {epoch + 1} (train.lr="
                    f"{self.cfg['lr']}); lower train.lr or set train.clip_grad; the checkpoints hold the last finite epoch"
                )
            row["lr"] = self.optimizer.param_groups[0]["lr"]
            row["seconds"] = time.perf_counter() - t0
            improved = row["val_mse"] < best_val
            if improved:
                best_val, best_epoch, bad = row["val_mse"], epoch, 0
            else:
                bad += 1
            history.append(row)
            stopped = patience_spent(bad, patience)
            if self.dist.is_main:
                state = self._state(epoch, best_val, best_epoch, bad, history)
                if improved:
                    save_checkpoint(best_path, state)
                save_checkpoint(last_path, state)
                self._write_metrics(history)
                for logger in self.loggers:
                    logger.log_metrics(row, epoch + 1)
            barrier(self.dist)
            self.log(
                f"epoch {epoch + 1}/{self.cfg['epochs']}  train {row.get('train_loss', float('nan')):.4g}  "
                f"val {row['val_mse']:.4g}{'  *' if improved else ''}"
            )
            if self.on_epoch_end is not None:
                self.on_epoch_end(epoch + 1, self.cfg["epochs"], time.perf_counter() - t0)
        if stopped:
            self.log(f"early stop: no improvement for {patience} epochs (best epoch {best_epoch + 1})")
        for logger in self.loggers:
            logger.close()
        return FitResult(
            best_val=best_val,
            best_epoch=best_epoch,
            epochs_run=epoch + 1,
            stopped_early=stopped,
            history=history,
            best_path=best_path if best_path.is_file() else None,
            last_path=last_path if last_path.is_file() else None,
        )

    def _write_metrics(self, history: list[Mapping[str, Any]]) -> None:
        """Rewrite ``metrics.jsonl``/``metrics.csv`` from the whole history, atomically: one header, its columns
        those of every row, and the rows always those of ``last.pt`` (also after a kill or a resume)."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.out_dir / "metrics.jsonl") as tmp:
            tmp.write_text("".join(json.dumps(dict(row)) + "\n" for row in history))
        columns = list(dict.fromkeys(k for row in history for k in row))
        with atomic_path(self.out_dir / "metrics.csv") as tmp, open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=columns, restval="")
            w.writeheader()
            w.writerows(history)
