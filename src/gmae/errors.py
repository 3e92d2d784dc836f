"""The error types for problems a user can fix; the CLI prints these as one line."""

from __future__ import annotations

import re
from collections.abc import Callable

# ``{name}``: an argument named inside an ArgumentError message.
_ARGUMENT = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class GmaeError(Exception):
    """A user-facing error: bad input, missing file, wrong config key, incompatible checkpoint.

    The CLI prints ``gmae: error: <message>`` and exits with status 2 instead of a traceback.
    """


class ArgumentError(GmaeError):
    """A bad value of a library function's argument, worded so that each caller can name it.

    ``message`` reads after the argument's name (``ArgumentError("batch_size", "must be at least
    1, got 0")``), or places it itself as ``{batch_size}``; other arguments it mentions are
    written ``{name}`` too. ``str(error)`` spells them as the Python names (``batch_size must be
    at least 1, got 0``); the CLI spells them as its flags (``--batch-size must be ...``).
    """

    def __init__(self, argument: str, message: str):
        self.argument = argument
        self.message = message
        super().__init__(self.format())

    def format(self, spell: Callable[[str], str] = str) -> str:
        """The message with every argument name written as ``spell(name)``."""
        text = self.message
        if "{" + self.argument + "}" not in text:
            text = "{" + self.argument + "} " + text
        return _ARGUMENT.sub(lambda m: spell(m.group(1)), text)

    def __reduce__(self):  # picklable (worker processes) despite the two-argument constructor
        return type(self), (self.argument, self.message)
