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
    "configs": ("sdkd.config_files", "list the packaged configs (--config NAME works from any folder), or show one"),
    "demo": ("sdkd.train.demo", "generate data, train teacher + baseline + distilled student, print the table"),
    "bench": ("sdkd.bench", "time every hot op on this machine: the backend auto picks vs the reference"),
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


def _user_error(exc: BaseException) -> str | None:
    """The one-line message of an error that is the user's to fix (bad input, a file that cannot be read or
    written, a missing optional package), or ``None`` for a bug, which keeps its traceback."""
    from sdkd.errors import SdkdError

    if isinstance(exc, ImportError):
        from sdkd._optional import import_error_message

        return import_error_message(exc)
    if isinstance(exc, OSError):  # permission, missing file, disk full...: name the file
        names = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
        return f"{exc.strerror or exc}: {names}" if names and exc.strerror else str(exc)
    if type(exc).__module__.startswith("yaml") and type(exc).__name__.endswith("Error"):
        return f"invalid YAML: {' '.join(str(exc).split())}"
    if isinstance(exc, SdkdError):
        return str(exc)
    if isinstance(exc, (ValueError, TypeError, KeyError)) and _raised_on_purpose_by_sdkd(exc):
        return str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)  # an argument check
    return None


def _raised_on_purpose_by_sdkd(exc: BaseException) -> bool:
    """Whether ``exc`` comes from a ``raise`` statement in sdkd's own code (a check of the user's arguments),
    not from inside torch or numpy or an implicit failure (a missing dict key, a wrong call): those are bugs
    and keep their traceback."""
    import traceback
    from pathlib import Path

    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return False
    last = frames[-1]
    package = Path(__file__).resolve().parent
    try:
        inside = Path(last.filename).resolve().is_relative_to(package)
    except (OSError, ValueError):
        return False
    return inside and (last.line or "").lstrip().startswith("raise ")


def console_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sdkd`` command: sdkd's own errors (bad input, an unreadable or unwritable file, a
    diverging run, a missing optional package) end with one clear line, not a traceback; anything else is a
    bug and keeps its traceback. Ctrl-C ends with one line too (exit status 130). ``SDKD_DEBUG=1`` shows
    the traceback of everything."""
    import os

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        rc = main(argv)
    except KeyboardInterrupt as exc:
        if os.environ.get("SDKD_DEBUG") == "1":
            raise
        return _interrupted(exc, argv)
    except BrokenPipeError:  # `sdkd configs | head`: the reader left; stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's own flush at exit must not fail again
        return 141  # 128 + SIGPIPE
    except Exception as exc:
        msg = None if os.environ.get("SDKD_DEBUG") == "1" else _user_error(exc)
        if msg is None:
            raise
        print(f"sdkd: error: {msg}", file=sys.stderr)
        return 2
    if "torch.distributed" in sys.modules:  # under torchrun: leave the process group cleanly (never returns)
        from sdkd.train.distributed import leave_torchrun

        return leave_torchrun(rc)
    return rc


if __name__ == "__main__":
    sys.exit(console_main())
