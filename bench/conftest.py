"""Collect ``bench_*.py`` files when pytest is pointed at ``bench/`` (``pytest bench/ --benchmark-only``), and hold
every suite to ``_backend_policy``: a fast backend this machine should have fails its cases when missing (unless
``--reference-only``), and the expected skips are summarised in one line instead of one line per case."""

from __future__ import annotations

import fnmatch
import os
import tempfile

import pytest
from _backend_policy import REFERENCE_ONLY_FLAG, backend_of, failure_message, missing_fast_backends, skip_summary


def pytest_addoption(parser):
    parser.addoption(
        REFERENCE_ONLY_FLAG,
        action="store_true",
        help="sdkd bench: let the cases of fast backends this machine should have but lacks skip instead of fail",
    )


def pytest_configure(config):
    # -ra would print every skipped case (dozens of GPU cases on a CPU machine); pytest_terminal_summary
    # prints them as one line instead. Failures, errors and xfails are still listed.
    chars = config.option.reportchars or ""
    config.option.reportchars = chars.replace("a", "fEXx").replace("A", "pPfEXx").replace("s", "").replace("S", "")
    config._sdkd_missing = None


def _missing(config) -> dict[str, str]:
    if config._sdkd_missing is None:  # probed once, on the first case (after collection imported torch)
        config._sdkd_missing = {} if config.getoption(REFERENCE_ONLY_FLAG) else missing_fast_backends()
    return config._sdkd_missing


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    backend = backend_of(getattr(getattr(item, "callspec", None), "params", {}))
    why = _missing(item.config).get(backend) if backend else None
    if why:
        pytest.fail(failure_message(backend, why), pytrace=False)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    skipped = terminalreporter.stats.get("skipped", [])
    reasons = []
    for report in skipped:
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
        reasons.append(reason.removeprefix("Skipped: "))
    if reasons:
        terminalreporter.write_line("bench: " + skip_summary(reasons, config.getoption(REFERENCE_ONLY_FLAG)))
    missing = config._sdkd_missing
    if missing:
        for backend, why in missing.items():
            terminalreporter.write_line("bench: FAILED: " + failure_message(backend, why), red=True)


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
    return pytest.Module.from_parent(parent, path=file_path)
