"""The one exception type that reaches users as a one-line message."""


class DeliftError(Exception):
    """A problem with the user's input or config, reported as one line without a traceback."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name if the message is empty)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
