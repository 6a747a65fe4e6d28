"""Ctrl-C in the training commands: one line saying where the run stopped, what is saved and how to go on.

The fit loop turns a ``KeyboardInterrupt`` into :class:`Interrupted`, which carries its position (epoch and
step) and its ``last.pt``; the stages of ``demo``/``reproduce`` and the steps before the first epoch add what
they were doing (:func:`stopped_in`); ``sdkd``'s entry point prints :func:`interrupt_line` (which adds how to
continue, per command) and exits with 130 (128 + SIGINT, what shells report for Ctrl-C). ``Interrupted`` is
a ``KeyboardInterrupt``, so code that catches those still does.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

#: Exit status after Ctrl-C: 128 + SIGINT.
EXIT_INTERRUPTED = 130

# How each command continues after Ctrl-C: train/distill with --resume; demo/reproduce by running again.
_CONTINUE = {
    "train": "resume",
    "distill": "resume",
    "demo": "rerun",
    "reproduce": "rerun",
}


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run: ``where`` it stopped (outermost first, e.g. ``["stage 2/3 baseline", "epoch 4/30
    at step 12/50"]``) and the ``checkpoint`` (a ``last.pt``) that holds what is saved."""

    def __init__(self, where: Sequence[str], checkpoint: str | Path | None = None):
        super().__init__(", ".join(where))
        self.where = list(where)
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None


@contextmanager
def stopped_in(label: str, checkpoint: str | Path | None = None) -> Iterator[None]:
    """Ctrl-C inside the block becomes :class:`Interrupted` with ``label`` as its outermost position (and
    ``checkpoint``, unless an inner one already names its own)."""
    try:
        yield
    except Interrupted as exc:
        exc.where.insert(0, label)
        if exc.checkpoint is None and checkpoint is not None:
            exc.checkpoint = Path(checkpoint)
        raise
    except KeyboardInterrupt:
        raise Interrupted([label], checkpoint) from None


def describe_checkpoint(path: Path) -> str:
    """What ``path`` (a ``last.pt``) holds, read back from the file: it is written atomically, so it is either
    the complete last epoch or absent."""
    from .checkpoint import CheckpointError, load_checkpoint

    if not path.is_file():
        return f"no epoch had finished, so there is no checkpoint yet ({path})"
    try:
        ck = load_checkpoint(path, map_location="cpu")
    except CheckpointError as exc:  # should not happen (atomic writes); say so rather than claim it is fine
        return f"the last checkpoint could not be read: {exc}"
    except KeyboardInterrupt:  # a second Ctrl-C while reading it back
        return f"the last checkpoint is {path} (not read back)"
    epochs = (ck.get("config") or {}).get("train", {}).get("epochs")
    held = f"epoch {ck['epoch'] + 1}" + (f"/{epochs}" if epochs else "")
    return f"the last checkpoint {path} is intact and holds {held}"


def command_line(argv: Sequence[str], extra: Sequence[str] = ()) -> str:
    """The command that ran, as a shell line (``sdkd ...``, or ``python -m sdkd.cli ...`` when started that
    way), with the arguments ``extra`` appended unless already given."""
    prog = ["sdkd"] if Path(sys.argv[0]).name in ("sdkd", "sdkd.exe") else ["python", "-m", "sdkd.cli"]
    args = list(argv) + [a for a in extra if a not in argv]
    return shlex.join(prog + args)


def interrupt_line(exc: KeyboardInterrupt, command: str | None, argv: Sequence[str]) -> str:
    """The one line printed for Ctrl-C: where it stopped, what the last checkpoint holds, how to continue."""
    parts = ["interrupted" + (f" during {', '.join(exc.where)}" if isinstance(exc, Interrupted) and exc.where else "")]
    if isinstance(exc, Interrupted) and exc.checkpoint is not None:
        parts.append(describe_checkpoint(exc.checkpoint))
    how = _CONTINUE.get(command or "")
    if how == "resume":
        parts.append(f"resume with: {command_line(argv, ['--resume'])}")
    elif how == "rerun":
        parts.append(
            f"continue with the same command (finished stages are reused, an interrupted one resumes from its "
            f"last.pt): {command_line(argv)}"
        )
    return "; ".join(parts)
