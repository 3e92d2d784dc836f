"""The error types for problems a user can fix; the CLI prints these as one line."""

from __future__ import annotations

from collections.abc import Callable


class GmaeError(Exception):
    """A user-facing error: bad input, missing file, wrong config key, incompatible checkpoint.

    The CLI prints ``gmae: error: <message>`` and exits with status 2 instead of a traceback.
    """


class ArgumentError(GmaeError):
    """A bad value of a library function's argument, worded so that each caller can name it.

    ``message`` reads after the argument's name (``ArgumentError("batch_size", "must be at least
    1, got 0")``), or places it itself as ``{batch_size}``; other arguments it names are written
    ``{name}`` too and listed in ``mentions``. Only those names are replaced, so braces in
    interpolated values (a path) stay as they are. ``str(error)`` spells them as the Python
    names (``batch_size must be at least 1, got 0``); the CLI spells them as its flags
    (``--batch-size must be ...``).
    """

    def __init__(self, argument: str, message: str, mentions: tuple[str, ...] = ()):
        self.argument = argument
        self.message = message
        self.mentions = tuple(mentions)
        super().__init__(self.format())

    def format(self, spell: Callable[[str], str] = str) -> str:
        """The message with every argument name written as ``spell(name)``."""
        text = self.message
        names = (self.argument, *self.mentions)
        if "{" + self.argument + "}" not in text:
            text = "{" + self.argument + "} " + text
        for name in names:
            text = text.replace("{" + name + "}", spell(name))
        return text

    def __reduce__(self):  # picklable (worker processes) despite the positional constructor
        return type(self), (self.argument, self.message, self.mentions)
