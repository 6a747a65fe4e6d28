"""On-disk cache for generated arrays: atomic writes, metadata JSON, completeness checks.

A cached array is two files in one folder: ``<stem>.npy`` (the data) and ``<stem>.json`` (its metadata). Writes go to
a uniquely named temporary file in the same folder and are published with ``os.replace`` (atomic on POSIX and
Windows), data first and metadata last, so a crash leaves either the old complete pair, or data without matching
metadata — never metadata describing a half-written file. An entry is reused only if its metadata matches what the
caller asks for (``match`` keys) **and** the ``.npy`` header and file size agree with that metadata **and** the file's
SHA-256 equals the one recorded in the metadata (bytes damaged in place are regenerated, not reused). Concurrent
builders of one entry are serialised by a lock file (``sdkd.data.lock``): the second reuses the first's result.

A temporary file's name holds the writer's host and process id. A writer killed without cleaning up (SIGTERM,
SIGKILL, power loss) leaves it behind; later uses of the entry remove it once that process is gone, never while it
runs (another DDP rank may be writing the same entry).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Union

import numpy as np

__all__ = [
    "default_root",
    "params_key",
    "atomic_path",
    "remove_stale_temps",
    "temp_prefix",
    "write_json_atomic",
    "read_json",
    "npy_is_complete",
    "metadata_matches",
    "cached_array",
    "file_digest",
]

PathLike = Union[str, os.PathLike]

_HOST = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname()) or "host"  # no "-": it separates the name's fields
_LEGACY_TEMP_AGE_S = 24 * 3600  # temporaries named without host and pid (older sdkd) count as stale after this


def default_root() -> Path:
    """The data folder: ``$SDKD_DATA_DIR`` if set, else ``$XDG_CACHE_HOME/sdkd`` or ``~/.cache/sdkd``."""
    env = os.environ.get("SDKD_DATA_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "sdkd"


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def params_key(params: Mapping[str, Any], length: int = 16) -> str:
    """Stable short hash of JSON-serialisable ``params`` (key order does not matter), for file names."""
    return hashlib.sha256(_canonical(dict(params)).encode()).hexdigest()[:length]


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.tmp-"


def temp_prefix(path: PathLike) -> str:
    """Name prefix of this process's temporaries of ``path`` (``.<name>.tmp-<host>-<pid>-``): a writer that
    builds a temporary file or folder next to ``path`` names it so, and ``remove_stale_temps`` can tell whether
    its writer is gone."""
    return f"{_temp_prefix(Path(path))}{_HOST}-{os.getpid()}-"


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (True when that cannot be told)."""
    if os.name == "nt":  # os.kill would terminate the process there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists but belongs to another user
        return True
    return True


def remove_stale_temps(path: PathLike) -> list[Path]:
    """Remove the temporary files (or folders) of ``path`` whose writer is gone; returns the removed paths.

    A temporary written by this sdkd is named ``.<name>.tmp-<host>-<pid>-<random>``: it is stale when ``<host>`` is
    this host and process ``<pid>`` no longer exists. Temporaries of live writers and of other hosts sharing the
    folder are kept. Ones from older sdkd versions (``.<name>.tmp-<random>``) are removed after a day untouched.
    """
    path = Path(path)
    prefix, mine = _temp_prefix(path), f"{_temp_prefix(path)}{_HOST}-"
    try:
        names = [n for n in os.listdir(path.parent) if n.startswith(prefix)]
    except OSError:  # no folder yet
        return []
    removed = []
    for name in names:
        tmp = path.parent / name
        rest = name[len(prefix) :]
        if name.startswith(mine):
            pid = name[len(mine) :].split("-", 1)[0]
            stale = pid.isdigit() and not _process_alive(int(pid))
        else:
            try:
                stale = "-" not in rest and time.time() - tmp.stat().st_mtime > _LEGACY_TEMP_AGE_S
            except OSError:
                stale = False
        if stale:
            with contextlib.suppress(FileNotFoundError):
                if tmp.is_dir() and not tmp.is_symlink():  # a folder being built (the teacher cache's)
                    shutil.rmtree(tmp)
                else:
                    tmp.unlink()
                removed.append(tmp)
    return removed


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on normal exit it replaces ``path`` atomically, on error it is removed.

    The temporary name starts with ``.`` and contains ``.tmp-``, so it never collides with a published entry; it
    holds this host and process id, so stale ones (their writer killed) are removed here and by ``cached_array``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o644)  # mkstemp makes it private; a cache entry is an ordinary file
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:  # data must be on disk before the name points at it
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_json_atomic(path: PathLike, obj: Mapping[str, Any]) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: PathLike) -> dict | None:
    """The JSON object in ``path``, or ``None`` if it is missing, unreadable or not an object."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def npy_is_complete(path: PathLike, shape: tuple | None = None, dtype: Any = None) -> bool:
    """True if ``path`` is a ``.npy`` file whose header parses, whose size equals header + data, and (when given)
    whose shape and dtype are ``shape`` and ``dtype``."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                hshape, fortran, hdtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                hshape, fortran, hdtype = np.lib.format.read_array_header_2_0(fh)
            else:
                return False
            offset = fh.tell()
        size = os.path.getsize(path)
    except (OSError, ValueError):
        return False
    if hdtype.hasobject or size != offset + int(np.prod(hshape, dtype=np.int64)) * hdtype.itemsize:
        return False
    if shape is not None and tuple(hshape) != tuple(shape):
        return False
    return dtype is None or hdtype == np.dtype(dtype)


def metadata_matches(meta: Mapping[str, Any] | None, expected: Mapping[str, Any]) -> bool:
    """True if every key of ``expected`` is in ``meta`` with an equal value (compared as canonical JSON)."""
    if meta is None:
        return False
    return all(k in meta and _canonical(meta[k]) == _canonical(v) for k, v in expected.items())


def file_digest(path: PathLike, chunk: int = 8 << 20) -> str:
    """SHA-256 (hex) of a file's bytes, read in chunks (memory stays bounded)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _say_waiting(lock_path: Path) -> None:
    print(f"sdkd: another process is making this data set; waiting for it ({lock_path})", file=sys.stderr)


def cached_array(
    stem: PathLike,
    match: Mapping[str, Any],
    shape: tuple[int, ...],
    dtype: Any,
    fill: Callable[[np.ndarray], Mapping[str, Any] | None],
    *,
    extra: Mapping[str, Any] | None = None,
    force: bool = False,
    on_wait: Callable[[Path], None] | None = _say_waiting,
) -> tuple[np.ndarray, Path, bool]:
    """Load ``<stem>.npy`` memory-mapped if its metadata matches ``match`` and the file is complete, else build it.

    ``fill(out)`` writes the data into ``out`` (a writable memory map of ``shape``/``dtype``, so memory stays
    bounded) and may return extra metadata to record. ``match`` (parameters, seed, version…) decides reuse; ``extra``
    is recorded but not compared. The metadata also records the ``.npy`` file's SHA-256 (``sha256``), checked on each
    reuse: an entry whose bytes changed on disk (or one without a digest) is regenerated, with a warning. The whole
    check-or-build holds ``<stem>.npy.lock`` (``sdkd.data.lock``): a second process asking for the same entry waits
    (``on_wait`` says so once) and then reuses it. Returns ``(read-only memmap, path of the .npy, reused)``.
    """
    from .lock import entry_lock

    stem = Path(stem)
    data_path, meta_path = stem.with_suffix(".npy"), stem.with_suffix(".json")
    shape = tuple(int(s) for s in shape)
    dtype = np.dtype(dtype)
    expected = {**dict(match), "shape": list(shape), "dtype": dtype.str}
    with entry_lock(data_path, on_wait):
        for p in (data_path, meta_path):  # leftovers of killed writers, also when the entry is reused
            remove_stale_temps(p)
        meta = read_json(meta_path)
        if not force and metadata_matches(meta, expected) and npy_is_complete(data_path, shape, dtype):
            if meta.get("sha256") == file_digest(data_path):
                return np.load(data_path, mmap_mode="r"), data_path, True
            warnings.warn(
                f"{data_path}: its bytes do not match the digest in {meta_path.name} (damaged on disk, or written "
                "before sdkd stored digests); regenerating it",
                RuntimeWarning,
                stacklevel=2,
            )
        from sdkd.outputs import check_writable_dir

        check_writable_dir(data_path.parent, "data cache folder")  # before the (long) generation
        with contextlib.suppress(FileNotFoundError):  # metadata must never describe a different data file
            meta_path.unlink()
        with atomic_path(data_path) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
            recorded = fill(out) or {}
            out.flush()
            del out
            digest = file_digest(tmp)
        write_json_atomic(meta_path, {**dict(extra or {}), **dict(recorded), **expected, "sha256": digest})
    return np.load(data_path, mmap_mode="r"), data_path, False
