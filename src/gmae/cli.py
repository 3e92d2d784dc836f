"""The ``gmae`` command line: one entry point, one subcommand per task.

Each command group lives next to the code it drives and exposes ``register(subparsers)``,
which adds its parser(s) and sets ``func`` (called with the parsed namespace, returns an exit
code). Modules listed here must import cheaply: heavy imports go inside the command functions.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterator

from gmae import __version__
from gmae.errors import ArgumentError, GmaeError

# Modules that contribute subcommands, in the order shown by ``gmae --help``.
COMMAND_MODULES = (
    "gmae.data.cli",  # gmae data prepare | info
    "gmae.render.cli",  # gmae bench render
    "gmae.train.cli",  # gmae pretrain | demo | bench train
    "gmae.evaluate.cli",  # gmae eval ...
    "gmae.export.cli",  # gmae export timm | hf | checkpoint | gaussians
    "gmae.report.cli",  # gmae zeroshot layers (an HTML page), gmae report
    "gmae.zeroshot.cli",  # gmae zeroshot edges | figure-ground | stats | occlusion
    "gmae.inspect",  # gmae inspect
    "gmae.demo",  # gmae demo
    "gmae.doctor",  # gmae doctor
)

# Library arguments whose flag is not the name with dashes (``batch_size`` -> ``--batch-size``).
FLAGS = {"wds": "--wd", "spec": "--data"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gmae", description="Gaussian Masked Autoencoders: pretrain, evaluate, explore."
    )
    parser.add_argument("--version", action="version", version=f"gmae {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers, groups)
    for sub in iter_parsers(parser):
        sub.formatter_class = DefaultsHelpFormatter
    return parser


def iter_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """``parser`` and every (sub-)subcommand parser below it."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases map to one parser
                yield from iter_parsers(sub)


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help unless the help already speaks of its default.

    Like argparse's ArgumentDefaultsHelpFormatter, but silent for flags and options without a
    default (None, empty), and lists shown as typed (``4 8 16``).
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            not action.option_strings
            or "default" in text.lower()
            or action.nargs == 0  # store_true / store_false / count-like flags
            or default is None
            or default is argparse.SUPPRESS
            or (isinstance(default, (list, tuple, str)) and not default)
        ):
            return text
        if isinstance(default, (list, tuple)):
            default = " ".join(map(str, default))
        return f"{text} (default: {str(default).replace('%', '%%')})"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        _check_outputs(args)  # --out / --json: a wrong path is found before any long work
        return int(args.func(args) or 0)
    except GmaeError as exc:
        print(f"gmae: error: {error_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gmae: interrupted", file=sys.stderr)
        return 130


def flag(argument: str) -> str:
    """The command-line flag that sets the library argument ``argument``."""
    return FLAGS.get(argument, "--" + argument.replace("_", "-"))


def error_message(exc: GmaeError) -> str:
    """``exc`` as the CLI prints it: library arguments named by their flags."""
    return exc.format(flag) if isinstance(exc, ArgumentError) else str(exc)


def _check_outputs(args: argparse.Namespace) -> None:
    import signal
    import threading

    from gmae.io import check_outputs

    # Past a file-size limit (ulimit -f), fail the write with EFBIG and a clear error instead
    # of being killed by SIGXFSZ mid-checkpoint.
    if hasattr(signal, "SIGXFSZ") and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    check_outputs(args)


def command_group(
    subparsers: argparse._SubParsersAction,
    groups: dict[str, argparse._SubParsersAction],
    name: str,
    help: str,
) -> argparse._SubParsersAction:
    """Return the sub-subparsers of group ``name`` (e.g. ``bench``), creating it on first use.

    Lets several modules add commands to one group (``gmae bench render`` and ``gmae bench
    train`` live in different packages).
    """
    if name not in groups:
        parser = subparsers.add_parser(name, help=help, description=help)
        groups[name] = parser.add_subparsers(dest=f"{name}_command", metavar="COMMAND")
        parser.set_defaults(func=lambda args, p=parser: (p.print_help(), 2)[1])
    return groups[name]
