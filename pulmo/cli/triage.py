"""``pulmo triage ...``: clinical triage commands."""

from __future__ import annotations

import importlib

from pulmo.cli import add_group

# Sub-command modules; each exposes ``add_command(subparsers)``.
_COMMANDS = ("triage_predict", "triage_import", "triage_score", "triage_train")


def register(subparsers) -> None:
    sub = add_group(
        subparsers,
        "triage",
        "Clinical triage: probability of critical illness (ICU, ventilation or death) "
        "within 5/10/30 days from admission data, and classic clinical scores.",
    )
    for name in _COMMANDS:
        try:
            module = importlib.import_module(f"pulmo.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"pulmo.cli.{name}":
                continue
            raise
        module.add_command(sub)
