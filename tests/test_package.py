import subprocess
import sys

import sdkd
from sdkd.cli import main


def test_version_string():
    assert isinstance(sdkd.__version__, str) and sdkd.__version__.count(".") == 2


def test_kernels_subpackage_importable():
    import sdkd.kernels

    assert sdkd.kernels.__name__ == "sdkd.kernels"


def test_info_lists_versions_and_backends(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "spectral_loss" in out and "reference" in out


def test_console_script_runs():
    r = subprocess.run([sys.executable, "-m", "sdkd.cli", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and sdkd.__version__ in r.stdout


def test_console_reports_bad_input_in_one_line(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "sdkd.cli", "train", "train.lrr=1"], capture_output=True, text=True, cwd=tmp_path
    )
    assert r.returncode == 2
    assert r.stderr.startswith("sdkd: error: unknown config key 'train.lrr'") and "Traceback" not in r.stderr
