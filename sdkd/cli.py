"""The ``sdkd`` command. Each subcommand lives in the module that owns it; this file only
wires them up, so ``sdkd --help`` stays cheap (modules are imported on use)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> (module, or ``module:attribute``, defining ``configure(parser)`` and ``run(args) -> int``; help)
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("sdkd.info", "versions, devices and which kernel backends are usable"),
    "data": ("sdkd.data.cli", "generate or inspect datasets"),
    "train": ("sdkd.train.cli:train", "train a teacher or a student baseline from a config"),
    "distill": ("sdkd.train.cli:distill", "distill a student from teacher checkpoints"),
    "eval": ("sdkd.train.cli:eval_", "metrics table and figures of checkpoints on the test split"),
    "predict": ("sdkd.forecast:predict_command", "physical-unit forecasts of an input file from a checkpoint"),
    "export": ("sdkd.forecast:export_command", "export a checkpoint's model to ONNX or torch.export"),
    "demo": ("sdkd.train.demo", "generate data, train teacher + baseline + distilled student, print the table"),
    "reproduce": ("sdkd.reproduce", "the paper's experiments: teachers, student, KD methods -> tables and figures"),
}


def _target(spec: str):
    module_name, _, attr = spec.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr) if attr else module


def build_parser() -> argparse.ArgumentParser:
    from sdkd import __version__

    parser = argparse.ArgumentParser(prog="sdkd", description="Spectral-decoupled knowledge distillation.")
    parser.add_argument("--version", action="version", version=f"sdkd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module_name)
        _target(module_name).configure(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    return int(_target(args._module).run(args) or 0)


def console_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sdkd`` command: bad input ends with one clear line, not a traceback
    (``SDKD_DEBUG=1`` shows the traceback)."""
    import os

    try:
        return main(argv)
    except (ValueError, TypeError, KeyError, FileNotFoundError, RuntimeError) as exc:
        if os.environ.get("SDKD_DEBUG") == "1":
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"sdkd: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(console_main())
