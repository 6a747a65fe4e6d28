"""The ``sdkd`` command. Each subcommand lives in the module that owns it; this file only
wires them up, so ``sdkd --help`` stays cheap (modules are imported on use)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterable, Sequence

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


def _build(only: Iterable[str] | None = None) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    from sdkd import __version__

    parser = argparse.ArgumentParser(prog="sdkd", description="Spectral-decoupled knowledge distillation.")
    parser.add_argument("--version", action="version", version=f"sdkd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers = {}
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module_name)
        if only is None or name in only:
            _target(module_name).configure(p)
        subparsers[name] = p
    return parser, subparsers


def build_parser(only: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The ``sdkd`` parser. ``only`` names the subcommands whose options are added (default: all); each
    one imports its module, so ``main`` adds only the one being run and ``sdkd --help`` imports none."""
    return _build(only)[0]


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv``: its first word that is not an option (top-level options take no value)."""
    word = next((a for a in argv if not a.startswith("-")), None)
    return word if word in COMMANDS else None


def _parse_command(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """Parse a subcommand's arguments with options and positionals in any order (``train a.b=1 --device cpu
    c.d=2``); a subcommand with subcommands of its own (``sdkd data``) cannot be, and is parsed as usual."""
    try:
        return parser.parse_intermixed_args(argv)
    except TypeError:  # argparse refuses intermixed parsing of nested subcommands before parsing anything
        return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command_of(argv)
    parser, subparsers = _build([command] if command else [])
    if command is None:  # --help, --version, no command, or an unknown one (argparse says so)
        parser.parse_args(argv)
        parser.print_help()
        return 0
    i = argv.index(command)
    parser.parse_args(argv[:i])  # top-level options before the command (--help, --version) act as usual
    args = _parse_command(subparsers[command], argv[i + 1 :])  # errors show the subcommand's usage
    args.command = command
    return int(_target(args._module).run(args) or 0)


def _interrupted(exc: KeyboardInterrupt, argv: Sequence[str]) -> int:
    """Ctrl-C: one line (where it stopped, what the last checkpoint holds, how to continue; rank 0 only) and
    exit status 130, instead of a traceback."""
    from sdkd.train.distributed import is_main_process
    from sdkd.train.interrupt import EXIT_INTERRUPTED, interrupt_line
    from sdkd.train.progress import close_bars

    close_bars()
    if is_main_process():
        print(f"sdkd: {interrupt_line(exc, _command_of(argv), argv)}", file=sys.stderr)
    return EXIT_INTERRUPTED


def console_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sdkd`` command: bad input or a missing optional package ends with one clear
    line, not a traceback (``SDKD_DEBUG=1`` shows the traceback); so does Ctrl-C (exit status 130)."""
    import os

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return main(argv)
    except KeyboardInterrupt as exc:
        if os.environ.get("SDKD_DEBUG") == "1":
            raise
        return _interrupted(exc, argv)
    except (ValueError, TypeError, KeyError, FileNotFoundError, RuntimeError, ImportError) as exc:
        if os.environ.get("SDKD_DEBUG") == "1":
            raise
        if isinstance(exc, ImportError):
            from sdkd._optional import import_error_message

            msg = import_error_message(exc)
        else:
            msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"sdkd: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(console_main())
