"""Scoring prompts (SPEC §3), cut into token pieces so a demonstration's prefix is reusable.

A template is cut at its fields into four regions, each tokenized on its own with
add_special_tokens=False. For the default with-example template they are

    head  "Instruction:\\nUse the following example ... response.\\n\\n\\nExample:"
    demo  "\\n{example_prompt}\\n{example_response}"
    mid   "\\n\\n\\nQuery:"
    query "\\n{query}\\n"

`demo` runs from the whitespace before the first example field to the end of the last one and
`query` from the whitespace before {query} to the end; the plain template has only `mid` (the
text before {query}) and `query`. Whitespace travels with the field after it, so "Query: {x}"
tokenizes " Instruction" as in running text (byte-level BPE), not " " + "Instruction".
A scored sequence is

    [BOS] head demo_j mid | query_i EOS response_i EOS

Everything left of "|" depends only on the demonstration j (one prefix, many targets); the last
len(response_i) + 1 tokens are scored. Sequences longer than max_length are cut, never in the
BOS, the literals, the response or the EOS tokens: first demo_j loses tokens from its left (the
example's instruction goes before its response), then query_i from its left (the end of the query,
next to the response, stays). A target whose response does not fit even so is too long.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np

from delift_ray.config import TemplatesConfig
from delift_ray.errors import ConfigError, DeliftError

EXAMPLE_FIELDS = ("example_prompt", "example_response")
NO_TOKENS = np.zeros(0, dtype=np.int32)


@dataclass(frozen=True)
class Template:
    """A template cut into regions; `demo` and `query` are format strings, the rest literal."""

    head: str
    demo: str
    mid: str
    query: str


@dataclass
class EncodedSet:
    """Token ids of each example's pieces, one int32 array per example and piece."""

    plain_query: list[np.ndarray]  # query region of the plain template, filled with x
    query: list[np.ndarray]  # query region of the with-example template, filled with x
    demo: list[np.ndarray]  # demo region filled with (x, y)
    response: list[np.ndarray]  # y

    def __len__(self) -> int:
        return len(self.response)


def split_template(text: str, with_example: bool, key: str = "templates") -> Template:
    """Cut a template into head / demo / mid / query; DeliftError if its fields are wrong."""
    want = (*EXAMPLE_FIELDS, "query") if with_example else ("query",)
    lits, names, current = [], [], ""
    for literal, name, spec, conversion in string.Formatter().parse(text):
        current += literal
        if name is None:
            continue
        if spec or conversion:
            raise ConfigError(
                f"config: {key} field {{{name}}} must not have a format or conversion"
            )
        lits.append(current)
        names.append(name)
        current = ""
    lits.append(current)
    if sorted(names) != sorted(want):
        raise ConfigError(
            f"config: {key} must contain each of {', '.join('{' + n + '}' for n in want)} once, "
            f"got {', '.join('{' + n + '}' for n in names) or 'no fields'}"
        )
    if names[-1] != "query":
        raise ConfigError(f"config: {key} must put {{query}} after the example fields")
    mid, ws = _cut_whitespace(lits[-2])
    query = _escape(ws) + "{query}" + _escape(lits[-1])
    if not with_example:
        return Template(head="", demo="", mid=mid, query=query)
    head, ws = _cut_whitespace(lits[0])
    demo = _escape(ws) + "{" + names[0] + "}" + _escape(lits[1]) + "{" + names[1] + "}"
    return Template(head=head, demo=demo, mid=mid, query=query)


def _cut_whitespace(literal: str) -> tuple[str, str]:
    body = literal.rstrip()
    return body, literal[len(body) :]


def _escape(literal: str) -> str:
    return literal.replace("{", "{{").replace("}", "}}")


def wants_bos(tokenizer, mode: str) -> bool:
    """Whether sequences start with BOS: `auto` follows what the tokenizer does for plain text."""
    bos = tokenizer.bos_token_id
    if mode == "never":
        return False
    if mode == "always":
        if bos is None:
            raise ConfigError("config: templates.add_bos is always, but the tokenizer has no BOS")
        return True
    return bos is not None and tokenizer("a")["input_ids"][:1] == [bos]


class Prompts:
    """Tokenized templates: the scored token sequence of a target, plain or with a demonstration."""

    def __init__(self, tokenizer, templates: TemplatesConfig, max_length: int) -> None:
        if tokenizer.eos_token_id is None:
            raise DeliftError("model: the tokenizer has no EOS token, which scoring needs")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.eos = np.array([tokenizer.eos_token_id], dtype=np.int32)
        bos = [tokenizer.bos_token_id] if wants_bos(tokenizer, templates.add_bos) else []
        self.bos = np.array(bos, dtype=np.int32)
        self.plain_template = split_template(templates.plain, False, "templates.plain")
        self.example_template = split_template(
            templates.with_example, True, "templates.with_example"
        )
        # literal tokens, indexed by "with example?"
        self.head = [NO_TOKENS, self._tokenize([self.example_template.head])[0]]
        self.mid = self._tokenize([self.plain_template.mid, self.example_template.mid])

    def _tokenize(self, texts: list[str]) -> list[np.ndarray]:
        if not texts:
            return []
        ids = self.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        return [np.asarray(t, dtype=np.int32) for t in ids]

    def encode(self, xs: list[str], ys: list[str]) -> EncodedSet:
        """Tokenize every piece of each (prompt x, response y) example once."""
        if len(xs) != len(ys):
            raise ValueError(f"{len(xs)} prompts but {len(ys)} responses")
        plain, example = self.plain_template, self.example_template
        return EncodedSet(
            plain_query=self._tokenize([plain.query.format(query=x) for x in xs]),
            query=self._tokenize([example.query.format(query=x) for x in xs]),
            demo=self._tokenize(
                [
                    example.demo.format(example_prompt=x, example_response=y)
                    for x, y in zip(xs, ys, strict=True)
                ]
            ),
            response=self._tokenize(list(ys)),
        )

    def fixed(self, with_example: bool) -> int:
        """Tokens that are never cut, besides the response: BOS, literals, two EOS."""
        return len(self.bos) + len(self.head[with_example]) + len(self.mid[with_example]) + 2

    def too_long(self, enc: EncodedSet) -> list[str | None]:
        """Per example, why it cannot be scored as a target (None if it can)."""
        fixed = max(self.fixed(False), self.fixed(True))
        return [self._reason(len(r), fixed) for r in enc.response]

    def _reason(self, n_response: int, fixed: int) -> str | None:
        if n_response + fixed <= self.max_length:
            return None
        return (
            f"response has {n_response} tokens; with the template's {fixed} fixed tokens it "
            f"exceeds the model limit of {self.max_length}"
        )

    def lengths(
        self, t: EncodedSet, i: np.ndarray, d: EncodedSet | None = None, j: np.ndarray | None = None
    ) -> np.ndarray:
        """Length of each sequence `sequence` builds; ValueError if a target is too long."""
        example = d is not None
        fixed = self.fixed(example)
        i = np.asarray(i, dtype=np.int64)
        n_response = _lens(t.response, i)
        over = np.flatnonzero(n_response + fixed > self.max_length)
        if len(over):
            reason = self._reason(int(n_response[over[0]]), fixed)
            raise ValueError(f"target {int(i[over[0]])} cannot be scored: {reason}")
        full = fixed + n_response + _lens(t.query if example else t.plain_query, i)
        if d is not None and j is not None:
            full += _lens(d.demo, j)
        return np.minimum(full, self.max_length)

    def sequence(
        self, t: EncodedSet, i: int, d: EncodedSet | None = None, j: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """(prefix, suffix) ids of target i shown demonstration j of d (plain if d is None)."""
        example = d is not None
        query = (t.query if example else t.plain_query)[i]
        demo = d.demo[j] if d is not None else NO_TOKENS
        response = t.response[i]
        room = self.max_length - self.fixed(example) - len(response)
        if room < 0:
            reason = self._reason(len(response), self.fixed(example))
            raise ValueError(f"target {i} cannot be scored: {reason}")
        keep_demo = min(len(demo), max(room - len(query), 0))
        keep_query = min(len(query), room - keep_demo)
        prefix = [self.bos, self.head[example], demo[len(demo) - keep_demo :], self.mid[example]]
        suffix = [query[len(query) - keep_query :], self.eos, response, self.eos]
        return np.concatenate(prefix), np.concatenate(suffix)


def _lens(arrays: list[np.ndarray], idx: np.ndarray) -> np.ndarray:
    return np.fromiter((len(arrays[k]) for k in idx), dtype=np.int64, count=len(idx))
