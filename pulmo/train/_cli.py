"""What the ``python -m pulmo.train...`` entry points share: the wording of library errors.

The library functions name their parameters in messages in quotes (``'tta_sizes'``); on the
command line the same parameters are flags (``--tta-sizes``).
"""

from __future__ import annotations

import argparse
import re

from pulmo.errors import PulmoError


def option_flags(parser: argparse.ArgumentParser) -> dict[str, str]:
    """``{dest: flag}`` of every optional argument of ``parser`` and of its sub-commands (the
    longest option string, e.g. ``--tta-sizes``)."""
    flags = {}
    for action in parser._actions:  # argparse has no public accessor for its arguments
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags.update(option_flags(sub))
        elif action.option_strings:
            flags[action.dest] = max(action.option_strings, key=len)
    return flags


def command_line_message(message: str, parser: argparse.ArgumentParser) -> str:
    """``message`` with each quoted parameter name that is an option of ``parser`` replaced by
    its flag: ``'p_png' must lie in 0..1`` -> ``--p-png must lie in 0..1``."""
    flags = option_flags(parser)
    return re.sub(r"'(\w+)'", lambda m: flags.get(m.group(1), m.group(0)), message)


def exit_for(exc: PulmoError, parser: argparse.ArgumentParser) -> SystemExit:
    """The ``SystemExit`` a command line raises for a library error: its message in flag
    wording, on stderr, exit status 1."""
    return SystemExit(command_line_message(str(exc), parser))
