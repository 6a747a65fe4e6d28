"""Packaged YAML configs: where they live, their names, and ``--config`` resolution (``sdkd configs``).

The experiment configs (``configs/<dataset>/<stage>.yaml``) and model presets (``configs/models/``) are
installed inside the package as ``sdkd.configs``, so a name such as ``nse/teacher`` works from any folder:
``--config nse/teacher``. A ``--config`` that is an existing file is always that file; a missing path is an
error that names the packaged configs, never a silent substitute. Torch-free, so the listing is instant.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from sdkd.errors import SdkdError

MODELS = "models"  # the subfolder of model presets (not experiment configs)


class ConfigNotFoundError(SdkdError, FileNotFoundError):
    """``--config`` names neither an existing file nor a packaged config."""


def packaged_config_root() -> Path:
    """The folder of packaged configs: ``$SDKD_CONFIG_DIR``, else the source checkout's ``configs/`` (a checkout
    or editable install), else the installed ``sdkd/configs``."""
    root = os.environ.get("SDKD_CONFIG_DIR")
    if root:
        return Path(root)
    package = Path(__file__).resolve().parent
    source_tree = package.parent / "configs"
    if (source_tree / MODELS).is_dir():
        return source_tree
    return package / "configs"


def list_configs(include_models: bool = False) -> dict[str, Path]:
    """``{name: file}`` of the packaged configs, names like ``nse/teacher`` (``models/nse`` with
    ``include_models``), sorted."""
    root = packaged_config_root()
    found = {}
    for path in sorted(root.glob("*/*.yaml")):
        name = path.relative_to(root).with_suffix("").as_posix()
        if include_models or not name.startswith(MODELS + "/"):
            found[name] = path
    return found


def describe(path: Path) -> str:
    """A config's first comment line (what it is), without the ``#``."""
    with open(path) as fh:
        for line in fh:
            if line.startswith("#"):
                return line.lstrip("#").strip()
            if line.strip():
                break
    return ""


def _as_name(text: str) -> str:
    """``configs/nse/teacher.yaml``, ``nse/teacher.yaml`` and ``nse/teacher`` all name ``nse/teacher``."""
    name = text.replace("\\", "/").strip("/")
    if name.startswith("configs/"):
        name = name[len("configs/") :]
    for suffix in (".yaml", ".yml"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def resolve_config(text: str | Path) -> Path:
    """The file ``--config text`` means: an existing file as given, else a packaged config by name
    (``nse/teacher``). A path that looks like a file (``.yaml``) but is missing is an error naming the packaged
    config of the same name when there is one, so a user never trains on a file they did not choose."""
    path = Path(text)
    if path.is_file():
        return path
    name = _as_name(str(text))
    packaged = list_configs(include_models=True)
    looks_like_path = path.suffix in (".yaml", ".yml") or path.is_absolute() or str(text).startswith(".")
    if not looks_like_path and name in packaged:
        return packaged[name]
    if name in packaged:
        hint = f"the packaged config of that name is `--config {name}`"
    else:
        names = ", ".join(list_configs())
        hint = f"packaged configs (`--config NAME`): {names}" if names else "no packaged configs were found"
    raise ConfigNotFoundError(f"config file {str(text)!r} does not exist; {hint} (`sdkd configs` lists them)")


# ----------------------------------------------------------------------------- sdkd configs
def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "List the packaged configs, or print one (`sdkd configs show nse/teacher`). Any command's --config takes "
        "these names from any folder; copy one to edit it (`sdkd configs show nse/teacher > my.yaml`)."
    )
    parser.add_argument("action", nargs="?", choices=["list", "show"], default="list", help="list (default) or show")
    parser.add_argument("name", nargs="?", help="the config to show, e.g. nse/teacher or models/nse")


def run(args: argparse.Namespace) -> int:
    if args.action == "show":
        if not args.name:
            raise ValueError("`sdkd configs show` needs a NAME, e.g. `sdkd configs show nse/teacher`")
        packaged = list_configs(include_models=True)
        name = _as_name(args.name)
        if name not in packaged:
            raise ConfigNotFoundError(
                f"no packaged config {args.name!r}; choose from {', '.join(packaged)} (`sdkd configs` lists them)"
            )
        print(packaged[name].read_text(), end="")
        return 0
    configs = list_configs()
    width = max((len(n) for n in configs), default=0)
    print(f"packaged configs in {packaged_config_root()} (use as `--config NAME` from any folder):")
    for name, path in configs.items():
        print(f"  {name:{width}s}  {describe(path)}")
    models = [n for n in list_configs(include_models=True) if n.startswith(MODELS + "/")]
    if models:
        print(f"model presets (`sdkd configs show NAME`): {', '.join(models)}")
    return 0
