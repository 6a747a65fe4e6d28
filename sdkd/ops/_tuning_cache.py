"""The file that keeps measured ``auto`` picks across processes (``sdkd info`` lists it).

One JSON file in sdkd's cache folder: ``$SDKD_CACHE_DIR``, else ``$XDG_CACHE_HOME/sdkd`` or ``~/.cache/sdkd``,
file ``autotune.json``. An entry is keyed by the op, the machine (device name, compute capability, CUDA toolkit,
CPU threads, sdkd / torch / triton versions) and the op's input kind, so a pick made on another GPU, build or
version is never reused. Writes go to a temporary file renamed over the old one (atomic: a reader sees the old
or the new file, never half of one); concurrent writers merge under an advisory lock where the OS has one, so
no writer's picks are lost. A file that cannot be read as sdkd's is ignored with a warning and left as it is.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

CACHE_DIR_ENV = "SDKD_CACHE_DIR"
FILE_NAME = "autotune.json"
FORMAT = 1  # bump when an entry's meaning changes: older files are then ignored (not read as this format)


def cache_dir() -> Path:
    """sdkd's cache folder (see module docstring); not created here."""
    explicit = os.environ.get(CACHE_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "sdkd"


def cache_file() -> Path:
    """Where the tuned picks live."""
    return cache_dir() / FILE_NAME


@functools.cache
def _versions() -> str:
    import torch

    import sdkd

    try:
        import triton

        triton_version = triton.__version__
    except Exception:  # not installed, or broken: either way not what a pick was measured with
        triton_version = "none"
    return f"sdkd {sdkd.__version__}, torch {torch.__version__}, triton {triton_version}"


@functools.cache
def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_key(device: torch.device) -> str:
    """What a timing depends on besides the inputs: the device, its toolkit and the software versions."""
    import torch

    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        where = f"{torch.cuda.get_device_name(index)} sm_{major}{minor}, CUDA {torch.version.cuda}"
    else:
        where = f"{device.type}: {_cpu_name()}, {torch.get_num_threads()} threads"
    return f"{where}; {_versions()}"


@functools.cache
def _warn_unreadable(path: str, why: str) -> None:
    warnings.warn(
        f"sdkd: ignoring the autotune cache {path} ({why}); picks are measured again and not saved. "
        f"Delete the file to let sdkd rewrite it.",
        stacklevel=5,
    )


class TuningCache:
    """Read and merge-write the picks file; the parsed file is remembered until its size or mtime changes."""

    def __init__(self) -> None:
        self._memo: tuple[tuple, dict[str, Any] | None] | None = None

    def _read(self, path: Path) -> dict[str, Any] | None:
        """The entries, ``{}`` for no file, None for a file that is not sdkd's format (warned once)."""
        try:
            st = path.stat()
        except OSError:
            return {}
        stamp = (str(path), st.st_mtime_ns, st.st_size)
        if self._memo is not None and self._memo[0] == stamp:
            return self._memo[1]
        try:
            data = json.loads(path.read_text())
            ok = isinstance(data, dict) and data.get("format") == FORMAT and isinstance(data.get("entries"), dict)
            entries = data["entries"] if ok else None
            why = "" if ok else f"not an sdkd autotune file of format {FORMAT}"
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            entries, why = None, f"unreadable: {exc}"
        if entries is None:
            _warn_unreadable(str(path), why)
        self._memo = (stamp, entries)
        return entries

    def get(self, key: str) -> dict[str, Any] | None:
        """The entry saved under ``key``, or None."""
        entries = self._read(cache_file())
        entry = (entries or {}).get(key)
        return entry if isinstance(entry, dict) else None

    def entries(self) -> dict[str, dict[str, Any]]:
        """Every saved entry (empty when there is no readable file)."""
        return dict(self._read(cache_file()) or {})

    def put(self, key: str, entry: dict[str, Any]) -> bool:
        """Merge one entry into the file; False when it could not be saved (unreadable file, read-only folder)."""
        path = cache_file()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with _locked(path.with_name(path.name + ".lock")):
                entries = self._read(path)
                if entries is None:
                    return False  # not ours to overwrite
                merged = {**entries, key: entry}
                _atomic_write(path, json.dumps({"format": FORMAT, "entries": merged}, indent=1, sort_keys=True))
        except OSError as exc:
            warnings.warn(f"sdkd: could not save an autotune pick to {path}: {exc}", stacklevel=4)
            return False
        return True


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """An exclusive advisory lock (POSIX ``flock``); elsewhere none (the atomic rename still keeps the file whole)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


TUNING_CACHE = TuningCache()
