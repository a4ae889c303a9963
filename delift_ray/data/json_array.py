"""The elements of a top-level JSON array, streamed by ijson: each one with its 1-based position,
or one DeliftError line naming the file and the element where the array stops being valid JSON.

Values come back as Python's json gives them: dict, list, str, int, float, bool or None. ijson's
C parser (yajl2_c) takes integers that fit in 64 bits and finite doubles; a file with a bigger
number is read again, more slowly, by ijson's pure-Python parser, which takes integers up to
Python's 4300-digit limit and refuses a float past the double range (json reads it as inf).
Unlike Python's json: NaN and Infinity are refused (they are not JSON); a lone \\udc00-\\udfff
escape is refused as invalid UTF-8; a lone \\ud800-\\udbff escape reads as '?', or, before another
\\u escape, as the one character yajl makes of the two (JSONL rejects such a row instead). Arrays
and objects nest at most MAX_DEPTH deep (the top-level array included), and one string or number
(or run of blanks) spans at most MAX_TOKEN bytes."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Generator, Iterator
from contextlib import AbstractContextManager
from typing import Any

import ijson

from delift_ray.errors import DeliftError

MAX_DEPTH = 512
MAX_TOKEN = 64 << 20
_READ, _READ_MAX = 1 << 20, 16 << 20  # bytes per read; doubled while inside one token
_BOM = b"\xef\xbb\xbf"
_FAST, _EXACT = ijson.get_backend("yajl2_c"), ijson.get_backend("python")
_ERRORS = (ijson.JSONError, UnicodeDecodeError, json.JSONDecodeError)  # what the parsers raise
_OPEN, _CLOSE = frozenset({"start_map", "start_array"}), frozenset({"end_map", "end_array"})
_NOT_JSON = re.compile(r"\b(?:NaN|Infinity)\b")
_CLIP = 200  # characters of a reason
Opener = Callable[[], AbstractContextManager[Any]]  # a fresh stream of the file, from its start
Parsed = Generator[tuple[int, Any], None, int | None]


def array_values(source: str, head: bytes, rest: Any, reopen: Opener) -> Iterator[tuple[int, Any]]:
    """(position, value) of each element of the array in `head` (read first) and then `rest`."""
    done = yield from _parsed(source, _Stream(head, rest), _FAST)
    if done is None:
        return
    with reopen() as again:  # a number the C parser cannot hold: read it all again in Python
        for index, value in _parsed(source, _Stream(again.read(len(_BOM)), again), _EXACT):
            if index > done:
                yield index, value


def _parsed(source: str, stream: _Stream, backend: Any) -> Parsed:
    """`backend`'s elements; then None, or how many it gave if the exact parser should go on."""
    events = _Events(source, stream, backend.basic_parse(stream, buf_size=_READ, use_float=True))
    index = 0
    try:
        for index, value in enumerate(backend.items(backend.parse(events), "item"), start=1):
            yield index, value
    except _ERRORS as e:
        if backend is _FAST and "overflow" in _message(e).partition("\n")[0]:
            return index
        raise _invalid(source, events.element(_at_end(e)), _reason(e)) from None
    except _TokenTooLong:
        reason = f"a string, number or run of blanks is over {MAX_TOKEN >> 20} MiB"
        raise _invalid(source, events.element(False), reason) from None
    return None


class _TokenTooLong(Exception):
    """MAX_TOKEN bytes read with no event from the parser."""


class _Stream:
    """The file for ijson: `head` (already read from it, less a UTF-8 BOM), then `rest`; read more
    at a time while the parser is inside one token, since yajl reads a token again at each read."""

    def __init__(self, head: bytes, rest: Any) -> None:
        self.head, self.rest = head.removeprefix(_BOM), rest
        self.size, self.quiet, self.moved = _READ, 0, True

    def read(self, size: int) -> bytes:
        """The next bytes: `size`, or up to _READ_MAX while no event comes between reads."""
        if size <= 0:  # ijson's look at what read() returns
            return b""
        if self.moved:
            self.size, self.quiet, self.moved = size, 0, False
        else:
            self.size = min(2 * self.size, _READ_MAX)
        if self.head:
            out, self.head = self.head[: self.size], self.head[self.size :]
        else:
            out = self.rest.read(self.size)
        self.quiet += len(out)
        if self.quiet > MAX_TOKEN:
            raise _TokenTooLong
        return out


class _Events:
    """A parser's events, checked before ijson nests them: counts the elements begun, and stops
    an array nested over MAX_DEPTH deep (ijson's memory grows with the square of the depth)."""

    def __init__(self, source: str, stream: _Stream, events: Iterator[tuple[str, Any]]) -> None:
        self.source, self.stream, self.events = source, stream, events
        self.started, self.depth = 0, 0

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        stream, depth, started = self.stream, 0, 0
        try:
            for event in self.events:
                stream.moved = True
                kind = event[0]
                if depth == 1 and kind not in _CLOSE:
                    started += 1
                if kind in _OPEN:
                    depth += 1
                    if depth > MAX_DEPTH:
                        reason = f"nested over {MAX_DEPTH} levels deep"
                        raise _invalid(self.source, started, reason)
                elif kind in _CLOSE:
                    depth -= 1
                yield event
        finally:  # where the parser stopped, for its error
            self.depth, self.started = depth, started

    def element(self, at_end: bool) -> int:
        """The element an error is in: the next one if it comes between two, else the last one."""
        return self.started + 1 if self.depth == 1 and not at_end else max(self.started, 1)


def _at_end(e: Exception) -> bool:
    """Whether a parser's error is that the file ends too soon."""
    return any(text in _message(e) for text in ("premature EOF", "Incomplete "))


def _message(e: Exception) -> str:
    """The error's text (yajl's is bytes when the text around the error is not UTF-8)."""
    arg = e.args[0] if isinstance(e, ijson.JSONError) and e.args else None
    return arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(e)


def _reason(e: Exception) -> str:
    """A parser's error as one line: what is wrong, and the text around it when yajl shows it."""
    if isinstance(e, UnicodeDecodeError):  # yajl's bytes of a string that Python cannot decode
        return f"a string is not valid UTF-8 ({e.reason})"
    first, _, rest = _message(e).strip().partition("\n")
    near = " ".join(rest.partition("(right here)")[0].split())
    near = "".join(c if c.isprintable() else "?" for c in near)
    reason = f"{first.rstrip('.')} near '{near}'" if near else first
    if _NOT_JSON.search(near):
        reason += " (NaN and Infinity are not JSON)"
    return reason if len(reason) <= _CLIP else f"{reason[: _CLIP - 40]}…{reason[-40:]}"


def _invalid(source: str, element: int, reason: str) -> DeliftError:
    """The one-line error for an array that stops being valid JSON at `element`."""
    return DeliftError(f"data: {source} is not a valid JSON array (element {element}): {reason}")
