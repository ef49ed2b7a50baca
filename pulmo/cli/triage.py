"""``pulmo triage ...``: clinical triage commands."""

from __future__ import annotations

from pulmo.cli import add_group, optional_modules

# Sub-command modules; each exposes ``add_command(subparsers)``.
_COMMANDS = ("triage_predict", "triage_import", "triage_score", "triage_train")


def register(subparsers) -> None:
    sub = add_group(
        subparsers,
        "triage",
        "Clinical triage: probability of critical illness (ICU, ventilation or death) "
        "within 5/10/30 days from admission data, and classic clinical scores.",
    )
    for module in optional_modules(_COMMANDS):
        module.add_command(sub)
