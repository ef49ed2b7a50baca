"""Exceptions whose message is meant to be read by a clinician or an administrator.

Every entry point (CLI command, API route, file reader) raises :class:`PulmoError`
or one of its subclasses for bad input; the CLI prints the message without a
traceback and exits with a non-zero status.
"""


class PulmoError(Exception):
    """An error caused by the input or the environment, with a readable message."""

    exit_code = 2


class InputError(PulmoError):
    """The input file or value is malformed, out of range or out of scope."""


class ModelError(PulmoError):
    """A model file is missing, corrupt, or of an unsupported version."""
