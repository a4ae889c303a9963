"""The exception types that reach users as a one-line message, and the exit code of each."""


class DeliftError(Exception):
    """A problem with the user's input, data, model, store or cluster, reported as one line
    without a traceback; the command exits with `exit_code` (1: the run failed)."""

    exit_code = 1


class ConfigError(DeliftError):
    """A config that no run can use ("config: ..."): a usage error, exit code 2 like argparse's."""

    exit_code = 2


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name if the message is empty)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
