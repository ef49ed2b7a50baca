"""The ``pulmo`` command line.

Each command group lives in its own module (``pulmo.cli.triage``, ...) and
exposes ``register(subparsers)``. Commands are thin: they parse arguments, call
the service layer and print. Errors meant for the user are :class:`PulmoError`
and are printed without a traceback.

Exit status: 0 success; 1 the command ran but some input rows/cases failed;
2 bad input or usage; 3 an unexpected internal error.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from pulmo import DISCLAIMER, __version__
from pulmo.errors import PulmoError

# Command groups, in the order they appear in --help. A group whose module is
# missing (a partial install) is simply not offered.
GROUPS = ("triage", "ct", "validate", "serve")

# What the command line adds to a library error of a given code (PulmoError.code): the library's
# messages speak of data and settings, these name the flags that change them.
HINTS = {
    "file_too_large": " (raise it with --max-file-mb)",
    "rescale_missing": " (--rescale-intercept, --rescale-slope)",
    "no_2d_model": "; pass --lung-model/--lesion-model or set PULMO_CT_MODELS",
    "images_in_subfolders": " (--batch)",
    "training_horizon_beyond_follow_up": " (--horizons, --risk-horizon)",
    "cox_separation": " (--ridge)",
    "training_diverged": " (--learning-rate)",
    "different_patients": " (--allow-different-patients)",
    "registration_failed": " (--min-lung-dice)",
    "output_exists": " (or pass --force to replace it)",
}


def error_text(exc: PulmoError) -> str:
    """The message of a library error with the command line's hint for its code, if any."""
    return f"{exc}{HINTS.get(getattr(exc, 'code', None), '')}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pulmo",
        description="Pulmo: AI-assisted diagnosis and triage of pneumonia. " + DISCLAIMER,
    )
    parser.add_argument("--version", action="version", version=f"pulmo {__version__}")
    parser.add_argument("--debug", action="store_true", help="show a full traceback on internal errors")
    sub = parser.add_subparsers(dest="group", metavar="COMMAND")
    for module in optional_modules(GROUPS):
        module.register(sub)
    return parser


def optional_modules(names):
    """Import ``pulmo.cli.NAME`` for each name, skipping modules that are not installed."""
    for name in names:
        try:
            yield importlib.import_module(f"pulmo.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"pulmo.cli.{name}":
                raise


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        # A group given without a sub-command, or nothing at all: show help.
        target = getattr(args, "_group_parser", parser)
        target.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except PulmoError as exc:
        print(f"pulmo: error: {error_text(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("pulmo: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence for the user
        if args.debug:
            raise
        print(
            f"pulmo: internal error: {type(exc).__name__}: {exc}\n"
            "This is a bug in Pulmo; run again with --debug for details and report it.",
            file=sys.stderr,
        )
        return 3


def add_group(subparsers, name: str, help_text: str) -> argparse._SubParsersAction:
    """Create a command group (``pulmo NAME ...``) and return its sub-parsers."""
    group = subparsers.add_parser(name, help=help_text, description=help_text)
    group.set_defaults(_group_parser=group)
    return group.add_subparsers(dest="command", metavar="COMMAND")
