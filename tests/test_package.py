import subprocess
import sys

import pytest

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


def test_help_does_not_import_the_command_modules():
    code = (
        "import sys\nfrom sdkd.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'numpy', 'sdkd.train', 'sdkd.forecast', 'sdkd.reproduce') if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "usage: sdkd" in r.stdout and "distill" in r.stdout and "reproduce" in r.stdout


@pytest.mark.parametrize("command", ["train", "distill", "eval"])
def test_training_commands_help_does_not_import_torch(command):
    code = (
        f"import sys\nfrom sdkd.cli import main\ntry:\n    main([{command!r}, '--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"usage: sdkd {command}" in r.stdout


def test_train_package_names_load_on_use():
    import sdkd.train as T
    from sdkd.train.loop import Trainer

    assert T.Trainer is Trainer and {"FitResult", "build_config", "save_checkpoint"} <= set(dir(T))
    with pytest.raises(AttributeError, match="no attribute 'Trainr'"):
        T.Trainr  # noqa: B018


def test_import_error_messages_name_the_extra():
    from sdkd._optional import import_error_message

    missing = ModuleNotFoundError("No module named 'h5py'", name="h5py")
    assert import_error_message(missing) == "the optional package 'h5py' is not installed: pip install 'sdkd[data]'"
    sub = ModuleNotFoundError("No module named 'matplotlib.pyplot'", name="matplotlib.pyplot")
    assert import_error_message(sub).endswith("pip install 'sdkd[plot]'")
    broken = ImportError("DLL load failed", name="onnxruntime")
    assert import_error_message(broken).startswith("DLL load failed") and "sdkd[export]" in import_error_message(broken)
    hinted = ImportError("ONNX export needs onnx: pip install 'sdkd[export]'")
    assert import_error_message(hinted) == str(hinted)
    other = ModuleNotFoundError("No module named 'nonexistent_pkg'", name="nonexistent_pkg")
    assert import_error_message(other) == str(other)


def test_optional_packages_map_to_real_extras():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    from pathlib import Path

    from sdkd._optional import EXTRAS

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    for module, extra in EXTRAS.items():
        assert extra in extras, (module, extra)
    for module in ("matplotlib", "scipy", "h5py", "xarray", "h5netcdf", "onnx", "onnxscript", "onnxruntime"):
        assert module in extras[EXTRAS[module]], module  # the extra really installs it


def test_console_reports_missing_optional_package_in_one_line(tmp_path):
    path = tmp_path / "x.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))  # the file is not what fails here
    code = (
        "import sys\nsys.modules['h5py'] = None\nfrom sdkd.cli import console_main\n"
        f"sys.exit(console_main(['train', 'data.name=array', 'data.path={path}', 'out_dir={tmp_path / 'o'}']))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr and "truncated" not in r.stderr
    assert "x.h5" in r.stderr and "'h5py' is not installed: pip install 'sdkd[data]'" in r.stderr
