"""Output paths checked before the work that fills them: a run, a forecast or a data set must not fail at its
first write after minutes of computing because the folder is read-only, is a file, or ``--out`` is a folder."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from sdkd.errors import SdkdError


class OutputPathError(SdkdError, ValueError):
    """An output path cannot be written: a file where a folder is needed (or the reverse), or no permission."""


def check_writable_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Create ``path`` if needed and prove it writable (a probe file is created and removed)."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{what} {str(path)!r} is a file, not a folder; choose a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".sdkd-write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputPathError(f"{what} {str(path)!r} is not writable: {exc.strerror or exc}") from None
    return path


def check_writable_file(path: str | os.PathLike, what: str = "--out") -> Path:
    """``path`` can be written as a file: it is not a folder, its folder is writable (created if needed), and an
    existing file there is not read-only."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputPathError(f"{what} {str(path)!r} is a folder; give a file name inside it")
    check_writable_dir(path.parent, f"the folder of {what}")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputPathError(f"{what} {str(path)!r} is not writable (a read-only file)")
    return path


def refuse_existing(paths: list[tuple[str | os.PathLike | None, str]], overwrite: bool) -> None:
    """The command line never replaces a file the user already has unless asked: each ``(path, what)`` that exists
    is refused, in one line naming ``--overwrite``, before any work."""
    if overwrite:
        return
    for path, what in paths:
        if path is not None and Path(path).expanduser().is_file():
            raise OutputPathError(f"{what} {str(path)!r} already exists; pass --overwrite to replace it")
