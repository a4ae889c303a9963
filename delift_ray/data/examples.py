"""The example sets a run works on: usable rows with content-hash ids, rejects, duplicates."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import pyarrow as pa


@dataclass(frozen=True)
class ChatParts:
    """Where a chat-template row's data sits in its rendering: the last user message's text
    (starting at `query_at` in x) and the assistant's reply (in y, as the template shows it)."""

    query_at: int
    query: str
    reply: str


@dataclass
class Example:
    """One usable row: content-hash id, rendered prompt and response, and where it came from;
    `chat` locates its data in x and y when a chat template rendered it."""

    id: str
    x: str
    y: str
    source: str
    row: int
    record: dict[str, Any]
    chat: ChatParts | None = None


@dataclass
class Reject:
    """A row that cannot be used, with its file, 1-based row number and a short reason."""

    source: str
    row: int
    reason: str


@dataclass
class ExampleSet:
    """The usable examples of one input (unique by id, input order), its rejects and duplicates."""

    examples: list[Example]
    rejects: list[Reject]
    duplicates: dict[str, int]
    schema: pa.Schema | None
    format: str
    rendering: str = "prompt template"  # or "chat template", "role lines" (data/chat.py)

    @property
    def ids(self) -> list[str]:
        """Example ids, in order."""
        return [e.id for e in self.examples]

    @property
    def xs(self) -> list[str]:
        """Prompts, in order."""
        return [e.x for e in self.examples]

    @property
    def ys(self) -> list[str]:
        """Responses, in order."""
        return [e.y for e in self.examples]

    @property
    def chats(self) -> list[ChatParts | None]:
        """Chat parts (None for rows no chat template rendered), in order."""
        return [e.chat for e in self.examples]

    @property
    def n_rows_read(self) -> int:
        """Rows read: usable + rejected + dropped duplicate copies (blank JSONL lines excluded)."""
        return len(self.examples) + len(self.rejects) + sum(self.duplicates.values())


class BadRow(Exception):
    """A row-level problem; its message is the reject reason."""


def embedding_texts(
    xs: list[str], ys: list[str], chat: list[ChatParts | None] | None = None
) -> list[str]:
    """What an embedding of each example reads: x + y, or a chat-template row's last user
    message and reply (the template's text, the same in every row, would only blur them)."""
    parts = chat if chat is not None else [None] * len(xs)
    return [
        f"{c.query}\n{c.reply}" if c is not None else x + y
        for x, y, c in zip(xs, ys, parts, strict=True)
    ]


def example_id(x: str, y: str) -> str:
    """Content hash of a rendered (x, y): the first 16 hex chars of sha256(json([x, y]))."""
    return hashlib.sha256(json.dumps([x, y]).encode("ascii")).hexdigest()[:16]


def type_name(value: Any) -> str:
    """A value's type as a message names it: null for None, else the Python type."""
    return "null" if value is None else type(value).__name__
