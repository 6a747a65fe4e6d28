"""``sdkd`` imported from a source checkout without a built extension says so (issue 23): the checkout shadows
an installed copy (cwd or pytest's root conftest.py first on ``sys.path``), so "reinstall with a compiler" would
send the user round in circles; every message about the missing extension names the checkout and the fix."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sdkd import info
from sdkd.ops import _ext, available_backends

ROOT = Path(__file__).resolve().parents[1]


def checkout_message(root: Path) -> str:
    return (
        f"sdkd was imported from the source checkout at {root}, where the extension is not built: "
        "`pip install -e .` builds it in place, or run from outside the checkout"
    )


@pytest.fixture
def no_extension(monkeypatch):
    """This process as if ``sdkd._C`` had failed to import."""
    monkeypatch.setattr(_ext, "_C", None)
    monkeypatch.setattr(_ext, "_IMPORT_ERROR", "ImportError: cannot import name '_C' from 'sdkd'")
    monkeypatch.delenv("SDKD_MORE_DETAILS", raising=False)
    _ext.cuda_status.cache_clear()
    yield
    _ext.cuda_status.cache_clear()


def test_this_test_run_imports_sdkd_from_the_checkout():
    assert _ext.source_checkout() == ROOT
    assert info.collect()["imported from"] == f"{ROOT / 'sdkd'} (a source checkout)"


def test_every_extension_message_names_the_checkout(no_extension):
    msg = checkout_message(ROOT)
    assert _ext.unavailable_reason() == msg
    assert _ext.cuda_unavailable_reason() == msg
    assert _ext.summary()["reason"] == msg
    assert msg in _ext.cuda_status()[2]
    compiled = {op: b for op, b in available_backends().items() if "cpu" in b}
    assert {"spectral_loss", "capped_simplex", "a2d_weights"} <= set(compiled)
    for op, backends in compiled.items():
        assert backends["cpu"] == [msg], op
        assert backends.get("cuda", [msg]) == [msg], op
    assert info.collect()["extension sdkd._C"].startswith(f"not built: {msg}")


def test_an_installed_copy_says_reinstall_with_a_compiler(no_extension, monkeypatch, tmp_path):
    site = tmp_path / "site-packages"
    (site / "sdkd").mkdir(parents=True)
    monkeypatch.setattr(_ext, "package_dir", lambda: site / "sdkd")
    _ext.source_checkout.cache_clear()
    try:
        assert _ext.source_checkout() is None
        assert _ext.unavailable_reason() == (
            "the compiled extension sdkd._C is not built; reinstall with a C++ compiler (pip install .)"
        )
    finally:
        _ext.source_checkout.cache_clear()


def test_sdkd_info_in_an_unbuilt_checkout(tmp_path):
    """End to end, in a fresh process: a checkout whose extension was never built (no ``_C*.so``)."""
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT / "sdkd", checkout / "sdkd", ignore=shutil.ignore_patterns("_C*.so", "_C*.pyd", "__pycache__"))
    (checkout / "csrc").mkdir()
    (checkout / "setup.py").write_text("")
    # an editable install elsewhere in this environment must not lend its _C: drop its meta-path finder
    code = (
        "import sys, runpy\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, '__module__', '').startswith('__editable__')]\n"
        "sys.argv = ['sdkd', 'info']\n"
        "runpy.run_module('sdkd.cli', run_name='__main__')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=checkout, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"imported from        {checkout / 'sdkd'} (a source checkout)" in r.stdout
    assert checkout_message(checkout) in r.stdout
    cpu_line = next(line for line in r.stdout.splitlines() if line.split()[:2] == ["spectral_loss", "cpu"])
    assert cpu_line.endswith(checkout_message(checkout))
