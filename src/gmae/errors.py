"""One error type for problems a user can fix; the CLI prints these as one line."""


class GmaeError(Exception):
    """A user-facing error: bad input, missing file, wrong config key, incompatible checkpoint.

    The CLI prints ``gmae: error: <message>`` and exits with status 2 instead of a traceback.
    """
