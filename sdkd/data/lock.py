"""An inter-process lock on a cache entry, so that two processes asking for the same data do the work once.

``entry_lock(path)`` holds an exclusive ``flock`` on ``<path>.lock``, removed again on release. A second process
blocks until the first has published its entry, then finds the entry complete and reuses it. (A waiter that gets the
lock of a file its holder has just removed sees that the path no longer names that file and locks the new one, so two
processes never hold the lock of one path at once.) The lock is released by the kernel when its
holder exits, also on ``kill -9``. Where ``flock`` does not exist (Windows) or the folder is read-only (a shared,
finished cache that nobody can write), the lock is skipped.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]


@contextlib.contextmanager
def entry_lock(path: str | os.PathLike, on_wait: Callable[[Path], None] | None = None) -> Iterator[None]:
    """Hold the lock of ``path`` (file ``<path>.lock``) for the ``with`` body; ``on_wait(lock_path)`` is called
    once if another process holds it (to say why nothing happens), then this one waits."""
    lock_path = Path(f"{path}.lock")
    if fcntl is None:
        yield
        return
    while True:
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):  # read-only: nobody else can write either
                yield
                return
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait(lock_path)
                on_wait = None
            fcntl.flock(fd, fcntl.LOCK_EX)
        if _same_file(fd, lock_path):
            break
        os.close(fd)  # its holder removed it on release: lock the file the path names now
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock_path.unlink()
        os.close(fd)  # releases the lock


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)
