"""The ``sdkd`` command. Each subcommand lives in the module that owns it; this file only
wires them up, so ``sdkd --help`` stays cheap (modules are imported on use)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> (module defining ``configure(parser)`` and ``run(args) -> int``, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("sdkd.info", "versions, devices and which kernel backends are usable"),
}


def build_parser() -> argparse.ArgumentParser:
    from sdkd import __version__

    parser = argparse.ArgumentParser(prog="sdkd", description="Spectral-decoupled knowledge distillation.")
    parser.add_argument("--version", action="version", version=f"sdkd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module_name)
        importlib.import_module(module_name).configure(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
