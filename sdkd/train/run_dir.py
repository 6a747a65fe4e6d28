"""A run's output folder: what sdkd writes there, and whether a new run may write there.

A run folder (``out_dir``) holds sdkd's own files, ``RUN_FILES``, next to whatever else the user keeps there.
sdkd only ever replaces, moves or removes those names: a new run into a folder that already holds one is refused
unless it resumes it (``--resume``, with a config that matches the checkpoint's up to ``RESUMABLE_KEYS``) or
replaces it (``--overwrite``, which removes ``RUN_FILES`` and nothing else). Every output folder is checked for
writability before any data is generated or an epoch trained.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sdkd.data.cache import remove_stale_temps
from sdkd.errors import SdkdError
from sdkd.outputs import check_writable_dir

# The files a training run writes into its folder (and the only ones sdkd replaces, moves or removes there).
RUN_FILES = ("last.pt", "best.pt", "metrics.csv", "metrics.jsonl")

# Config keys that may differ between a checkpoint and the run resuming it: they change neither the data, the
# model nor the optimisation already done (more epochs continue the same run; a moved folder is the same run).
RESUMABLE_KEYS = frozenset(
    {"train.epochs", "train.patience", "train.progress", "data.num_workers", "out_dir", "distill.cache"}
)


class RunFolderError(SdkdError, ValueError):
    """An output folder cannot be used: it is a file, not writable, holds another run, or cannot be resumed."""


def run_files(out_dir: str | Path) -> list[str]:
    """The ``RUN_FILES`` present in ``out_dir``."""
    out = Path(out_dir)
    return [name for name in RUN_FILES if (out / name).is_file()]


def prepare_run_dir(out_dir: str | Path, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Make ``out_dir`` ready for a run, or refuse with one line naming the flag that allows it.

    Without flags the folder must hold no run (``RUN_FILES``); ``resume`` needs ``last.pt`` if the folder holds
    any run file (a ``best.pt`` alone would be overwritten by a fresh start); ``overwrite`` removes ``RUN_FILES``
    and nothing else. The folder is created and checked for writability first, and temporaries that a killed
    save left there are removed.
    """
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite exclude each other: continue the run or replace it")
    out = check_writable_dir(out_dir, "out_dir")
    for name in RUN_FILES:  # hidden temporaries of a writer killed mid-save (only once its process is gone)
        remove_stale_temps(out / name)
    found = run_files(out)
    if not found:
        return out
    if resume:
        if "last.pt" not in found:
            raise RunFolderError(
                f"out_dir {str(out)!r} holds {', '.join(found)} but no last.pt: there is nothing to resume; "
                "--overwrite replaces that run"
            )
        return out
    if not overwrite:
        raise RunFolderError(
            f"out_dir {str(out)!r} already holds a run ({', '.join(found)}): pass --resume to continue it, "
            "--overwrite to replace it (only sdkd's files are replaced), or choose another out_dir"
        )
    for name in found:
        (out / name).unlink()
    return out


def move_run_aside(out_dir: str | Path) -> Path:
    """Move the ``RUN_FILES`` of ``out_dir`` into a new subfolder ``outdated-<UTC time>`` and return it;
    nothing is deleted, and the user's own files stay where they are."""
    out = Path(out_dir)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dest, n = out / f"outdated-{stamp}", 1
    while dest.exists():
        n += 1
        dest = out / f"outdated-{stamp}-{n}"
    dest.mkdir(parents=True)
    for name in run_files(out):
        os.replace(out / name, dest / name)
    return dest


def _flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(cfg, Mapping):
        return {prefix: cfg}
    flat: dict[str, Any] = {}
    for k, v in cfg.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping) and v:
            flat.update(_flatten(v, key))
        else:
            flat[key] = v
    return flat


def comparable_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``cfg`` as compared between a stored run and a rerun or resume: ``distill.teachers`` relative to
    ``out_dir`` (how a run refers to its teachers whatever path named the run folder: ``runs/x``,
    ``/work/runs/x``, or a copy of it), and no ``distill`` section in a ``stage: train`` config (it is unused
    there, so ``--set distill.…`` for the students of a reproduce run leaves its teachers reusable)."""
    out = dict(cfg)
    where, distill = cfg.get("out_dir"), cfg.get("distill")
    if cfg.get("stage", "train") == "train":
        out.pop("distill", None)
    elif isinstance(where, str | os.PathLike) and isinstance(distill, Mapping):
        teachers = distill.get("teachers")
        if isinstance(teachers, list | tuple):
            rel = [os.path.relpath(t, where) if isinstance(t, str | os.PathLike) else t for t in teachers]
            out["distill"] = {**distill, "teachers": rel}
    return out


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The dotted keys whose values differ between two configs (a key missing on one side differs)."""
    a, b = _flatten(old), _flatten(new)
    return sorted(k for k in a.keys() | b.keys() if k not in a or k not in b or a[k] != b[k])


def check_resume_config(stored: Mapping[str, Any] | None, new: Mapping[str, Any], path: str | Path) -> list[str]:
    """Refuse to resume ``path`` (a ``last.pt``) with a config that differs from the stored one outside
    ``RESUMABLE_KEYS`` (keys added to sdkd since the checkpoint was written pass at their default value);
    returns the allowed differences (for the log)."""
    if not isinstance(stored, Mapping):
        raise RunFolderError(f"cannot resume {str(path)!r}: it stores no config (not written by sdkd train/distill)")
    from .config import DEFAULTS

    stored, new = comparable_config(stored), comparable_config(new)
    diff = config_differences(stored, new)
    flat_old, flat_new, defaults = _flatten(stored), _flatten(new), _flatten(DEFAULTS)
    # a key the checkpoint's (older) sdkd did not have is accepted at its default value
    added = {k for k in diff if k not in flat_old and k in defaults and flat_new.get(k) == defaults[k]}
    refused = [k for k in diff if k not in RESUMABLE_KEYS and k not in added]
    onecycle = new.get("train", {}).get("scheduler") == "onecycle"
    if "train.epochs" in diff and onecycle:  # the schedule's length is stored in the checkpoint
        refused.append("train.epochs")
    if refused:
        shown = "; ".join(f"{k}: {flat_old.get(k, '<unset>')!r} -> {flat_new.get(k, '<unset>')!r}" for k in refused)
        allowed = ", ".join(sorted(RESUMABLE_KEYS)) + (
            " (not train.epochs with scheduler onecycle)" if onecycle else ""
        )
        raise RunFolderError(
            f"cannot resume {str(path)!r}: the config differs from the checkpoint's in {shown}; only {allowed} "
            "may change on resume (use --overwrite or another out_dir for a new run)"
        )
    return diff
