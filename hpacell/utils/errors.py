"""The base class of hpacell's domain errors.

A domain error is a user's mistake or a bad input file: the command line prints
``hpacell CMD: error: <message>`` (one line, naming the file and the problem) and
exits 1. Anything else that escapes a command is a bug and shows its traceback.
"""

from __future__ import annotations

__all__ = ["HpacellError", "InputError"]


class HpacellError(Exception):
    """A problem with the user's input or options; the message says which file and what."""


class InputError(HpacellError, ValueError):
    """An invalid option value or input file content (the message names the option or the file)."""
