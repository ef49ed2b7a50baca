"""Argparse types of the numeric options: every number finite and within a stated range.

``type=number(1, 1000, integer=True)`` makes argparse refuse ``--imputations 0`` (or ``nan``,
``inf``, ``1e400``, ``x``) with one kind of message for every command, naming the flag and the
range, with exit status 2::

    pulmo triage predict: error: argument --imputations: expected a whole number from 1 to 1000, got '0'

``t.range_text`` ("a whole number from 1 to 1000") is for the option's help.
"""

from __future__ import annotations

import argparse
import math

#: The largest seed of every command (numpy's legacy seeds are 32-bit).
MAX_SEED = 2**32 - 1
_MAX_TEXT = 64  # characters of a number on the command line (int() of 5000 digits is slow or refused)


def _fmt(v) -> str:
    return str(v) if isinstance(v, int) else f"{v:g}"


def describe(lo=None, hi=None, *, integer: bool = False, lo_open: bool = False, hi_open: bool = False) -> str:
    """The range in words: "a whole number from 1 to 1000", "a number greater than 0 and less than 1"."""
    kind = "a whole number" if integer else "a number"
    if lo is not None and hi is not None and not lo_open and not hi_open:
        return f"{kind} from {_fmt(lo)} to {_fmt(hi)}"
    parts = []
    if lo is not None:
        parts.append(f"greater than {_fmt(lo)}" if lo_open else f"at least {_fmt(lo)}")
    if hi is not None:
        parts.append(f"less than {_fmt(hi)}" if hi_open else f"at most {_fmt(hi)}")
    if not parts:
        return f"a finite {kind[2:]}"
    return f"{kind} {'of ' if parts[0].startswith('at ') else ''}" + " and ".join(parts)


def number(lo=None, hi=None, *, integer: bool = False, lo_open: bool = False, hi_open: bool = False):
    """An argparse ``type``: the option's text as a finite float (or int) within the range, else an
    :class:`argparse.ArgumentTypeError` that states the range."""
    text_range = describe(lo, hi, integer=integer, lo_open=lo_open, hi_open=hi_open)

    def parse(text: str):
        bad = argparse.ArgumentTypeError(f"expected {text_range}, got {text!r}")
        s = str(text).strip()
        if not s or len(s) > _MAX_TEXT:
            raise bad
        try:
            value = float(s)
        except ValueError:
            raise bad from None
        if not math.isfinite(value):
            raise bad
        if integer:
            if not value.is_integer():
                raise bad
            try:
                value = int(s)          # exact for long whole numbers
            except ValueError:
                value = int(value)      # "1e3"
        if lo is not None and (value < lo or (lo_open and value == lo)):
            raise bad
        if hi is not None and (value > hi or (hi_open and value == hi)):
            raise bad
        return value

    parse.__name__ = "whole number" if integer else "number"  # argparse's "invalid <name> value"
    parse.range_text = text_range
    return parse


def seed():
    """The ``--seed`` of every command: a whole number from 0 to 2**32 - 1."""
    return number(0, MAX_SEED, integer=True)
