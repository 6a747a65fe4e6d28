"""Collect ``bench_*.py`` files when pytest is pointed at ``bench/`` (``pytest bench/ --benchmark-only``)."""

from __future__ import annotations

import fnmatch
import os
import tempfile

import pytest

# measured `auto` picks are made in this run (the warm-up call of each `auto` case), not read from an older run's
# file; SDKD_CACHE_DIR set by the caller wins
os.environ.setdefault("SDKD_CACHE_DIR", tempfile.mkdtemp(prefix="sdkd-bench-cache-"))


def pytest_collect_file(file_path, parent):
    if file_path.suffix != ".py" or not file_path.name.startswith("bench_"):
        return None
    if parent.session.isinitpath(file_path):
        return None  # named on the command line: pytest collects it anyway
    if any(fnmatch.fnmatch(file_path.name, pat) for pat in parent.config.getini("python_files")):
        return None  # already collected by the configured pattern
    if parent.session.isinitpath(file_path):
        return None  # named on the command line: pytest's python plugin collects it already
    return pytest.Module.from_parent(parent, path=file_path)
