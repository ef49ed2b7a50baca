"""Exceptions whose message is meant to be read by a clinician or an administrator.

Every entry point (CLI command, API route, file reader) raises :class:`PulmoError`
or one of its subclasses for bad input; the CLI prints the message without a
traceback and exits with a non-zero status, a web service answers 4xx with it.

Messages speak of the data and the settings, never of one face's controls (no
command-line flag, no form field): a face that wants to add such a hint looks up
the error's stable ``code`` (for example ``"file_too_large"``) and appends its own.
"""


class PulmoError(Exception):
    """An error caused by the input or the environment, with a readable message.

    ``code``: an optional stable identifier of the kind of error, for faces that add
    their own hint (see the module docstring); ``None`` when there is nothing to add.
    """

    exit_code = 2

    def __init__(self, message: str = "", *, code: str | None = None):
        super().__init__(message)
        self.code = code

    def __reduce__(self):  # keep ``code`` across processes (pickle)
        return (self.__class__, self.args, {"code": self.code})


class InputError(PulmoError):
    """The input file or value is malformed, out of range or out of scope."""


class ModelError(PulmoError):
    """A model file is missing, corrupt, or of an unsupported version."""
