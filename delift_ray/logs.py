"""Logging: the library logs through `logging.getLogger(__name__)` (under "delift_ray"); the
command line sets up the one handler on stderr, the level, and Ray's and transformers' levels.

Unconfigured (the library used from Python), "delift_ray" records go wherever the application
sends them, and warnings reach stderr through logging's last-resort handler as usual.
"""

from __future__ import annotations

import logging
import os
import sys

ROOT = "delift_ray"
PREFIX = "[delift-ray] "
THIRD_PARTY = ("ray", "transformers")  # their own handlers; kept at WARNING unless verbose
QUIET, NORMAL, VERBOSE = -1, 0, 1
_LEVELS = {QUIET: logging.WARNING, NORMAL: logging.INFO, VERBOSE: logging.DEBUG}
_TAGS = {logging.DEBUG: "debug: ", logging.WARNING: "warning: ", logging.ERROR: "error: "}

_third_party_level: int | None = None  # set by configure(); None: leave Ray's own default
_transformers_env: str | None = None  # the TRANSFORMERS_VERBOSITY configure() set, if any


class _Formatter(logging.Formatter):
    """`[delift-ray] message`, with `warning: ` / `error: ` / `debug: ` after the prefix."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as the one line users read."""
        tag = _TAGS.get(min(record.levelno, logging.ERROR), "")
        return PREFIX + tag + super().format(record)


class _StderrHandler(logging.Handler):
    """Writes each record to whatever sys.stderr is when it is emitted (pytest's capture too),
    above any progress bar drawn there."""

    def emit(self, record: logging.LogRecord) -> None:
        """One line on stderr."""
        try:
            line = self.format(record)
            if "tqdm" in sys.modules:  # a bar may be on screen: tqdm clears and redraws it
                from tqdm import tqdm

                tqdm.write(line, file=sys.stderr)
            else:
                sys.stderr.write(line + "\n")
            sys.stderr.flush()
        except Exception:  # logging must never stop the run
            self.handleError(record)


def configure(verbosity: int = NORMAL) -> None:
    """Set up the command line's logging: one stderr handler on "delift_ray" at INFO (DEBUG with
    VERBOSE, WARNING with QUIET); Ray and transformers at WARNING unless VERBOSE (then INFO)."""
    global _third_party_level
    logger = logging.getLogger(ROOT)
    for old in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(old)
    handler = _StderrHandler()
    handler.setFormatter(_Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(_LEVELS[verbosity])
    logger.propagate = False
    _third_party_level = logging.INFO if verbosity == VERBOSE else logging.WARNING
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(_third_party_level)
    _set_transformers_env(logging.getLevelName(_third_party_level).lower())


def _set_transformers_env(level: str) -> None:
    """TRANSFORMERS_VERBOSITY (what transformers reads when it first configures its logger, here
    and in Ray workers), unless the user set it."""
    global _transformers_env
    if os.environ.get("TRANSFORMERS_VERBOSITY") not in (None, _transformers_env):
        return
    os.environ["TRANSFORMERS_VERBOSITY"] = _transformers_env = level


def third_party_level() -> int:
    """The level for Ray's driver logger (`ray.init(logging_level=...)`): configure()'s, else
    Ray's own default (INFO)."""
    return logging.INFO if _third_party_level is None else _third_party_level


def progress_enabled() -> bool:
    """Whether progress bars show: unless "delift_ray" is set above INFO (the CLI's -q)."""
    return logging.getLogger(ROOT).level <= logging.INFO
