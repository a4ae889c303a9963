"""The one exception type that reaches users as a one-line message."""


class DeliftError(Exception):
    """A problem with the user's input or config, reported as one line without a traceback."""
