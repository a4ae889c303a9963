"""Scoring prompts (SPEC §3): each prompt tokenized as one text, exactly as a per-pair loop does.

A scored sequence is

    [BOS] tok(prompt) EOS tok(response) EOS

where `prompt` is the plain template filled with the target's x, or the with-example template
filled with the demonstration's (x, y) and the target's x, and `tok` tokenizes one whole text
without special tokens, with special-token strings in it split into ordinary text (a `</s>` in
the data is never an EOS). BOS is added as `templates.add_bos` says (`auto`: when the tokenizer
adds it to plain text). The last len(tok(response)) + 1 tokens are scored.

Sequences longer than max_length are cut, never in the BOS, the template's literal text, the
response or the EOS tokens: the tokens of the demonstration (from its first example field to the
end of its last, a token belonging where its first character is) go first, from the left (the
example's instruction before its response), then the tokens of the query, from the left (the end
of the query, next to the response, stays). A target whose response does not fit even so is
too long; `too_long` reports it before scoring.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np

from delift_ray.config import TemplatesConfig
from delift_ray.errors import ConfigError, DeliftError

EXAMPLE_FIELDS = ("example_prompt", "example_response")
# tokens a cut prompt may keep beyond the literal-only template's count: a token at a field's
# edge can merge literal and field text, so the literals alone may tokenize one or two shorter
EDGE_SLACK = 2

Span = tuple[int, int]


@dataclass(frozen=True)
class Template:
    """A template's literal text around its fields: literals[k] precedes fields[k]."""

    literals: tuple[str, ...]
    fields: tuple[str, ...]

    def render(self, values: dict[str, str]) -> tuple[str, dict[str, Span]]:
        """The filled-in text and each field's character span in it."""
        parts, spans, at = [], {}, 0
        for literal, name in zip(self.literals, self.fields, strict=False):
            value = values[name]
            at += len(literal)
            spans[name] = (at, at + len(value))
            at += len(value)
            parts += [literal, value]
        parts.append(self.literals[-1])
        return "".join(parts), spans


@dataclass
class EncodedSet:
    """The texts of a set and what is tokenized once per example (int32 token ids)."""

    xs: list[str]
    ys: list[str]
    plain: list[np.ndarray]  # the whole plain prompt filled with x, without BOS
    response: list[np.ndarray]  # y
    query_len: np.ndarray  # tokens of x alone (for estimates)
    demo_len: np.ndarray  # tokens of the example text alone (for estimates)

    def __len__(self) -> int:
        return len(self.ys)

    def take(self, keep: list[int]) -> EncodedSet:
        """The examples at positions `keep`, in that order."""
        return EncodedSet(
            [self.xs[k] for k in keep],
            [self.ys[k] for k in keep],
            [self.plain[k] for k in keep],
            [self.response[k] for k in keep],
            self.query_len[keep],
            self.demo_len[keep],
        )


def split_template(text: str, with_example: bool, key: str = "templates") -> Template:
    """A template's literals and fields; ConfigError if its fields are wrong."""
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
    return Template(literals=tuple(lits), fields=tuple(names))


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


def tokenize_text(tokenizer, texts: list[str], offsets: bool = False) -> dict:
    """Token ids (and character offsets) of each whole text, special-token strings as text."""
    return tokenizer(
        texts,
        add_special_tokens=False,
        split_special_tokens=True,
        return_offsets_mapping=offsets,
        verbose=False,
    )


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
        empty = dict.fromkeys((*EXAMPLE_FIELDS, "query"), "")
        literal_only = [t.render(empty)[0] for t in (self.plain_template, self.example_template)]
        # BOS, the literals and two EOS, indexed by "with example?"
        self._fixed = [len(self.bos) + len(ids) + 2 for ids in self._tokenize(literal_only)]

    def _tokenize(self, texts: list[str]) -> list[np.ndarray]:
        if not texts:
            return []
        ids = tokenize_text(self.tokenizer, texts)["input_ids"]
        return [np.asarray(t, dtype=np.int32) for t in ids]

    def encode(self, xs: list[str], ys: list[str]) -> EncodedSet:
        """Tokenize each (prompt x, response y) example's plain prompt and response once."""
        if len(xs) != len(ys):
            raise ValueError(f"{len(xs)} prompts but {len(ys)} responses")
        plain = self.plain_template
        demo_texts = [self._demo_text(x, y) for x, y in zip(xs, ys, strict=True)]
        return EncodedSet(
            xs=list(xs),
            ys=list(ys),
            plain=self._tokenize([plain.render({"query": x})[0] for x in xs]),
            response=self._tokenize(list(ys)),
            query_len=_counts(self._tokenize(list(xs))),
            demo_len=_counts(self._tokenize(demo_texts)),
        )

    def _demo_text(self, x: str, y: str) -> str:
        text, spans = self._render_pair(x, y, "")
        (a, _), (_, b) = (spans[name] for name in self.example_template.fields[:2])
        return text[a:b]

    def _render_pair(self, x: str, y: str, query: str) -> tuple[str, dict[str, Span]]:
        values = {"example_prompt": x, "example_response": y, "query": query}
        return self.example_template.render(values)

    def fixed(self, with_example: bool) -> int:
        """Tokens that are never cut, besides the response: BOS, literals, two EOS."""
        return self._fixed[with_example]

    def too_long(self, enc: EncodedSet) -> list[str | None]:
        """Per example, why it cannot be scored as a target (None if it can)."""
        fixed = max(self._fixed) + EDGE_SLACK
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
        """Estimated length of each sequence (pieces' token counts added; for plans, not cuts)."""
        i = np.asarray(i, dtype=np.int64)
        n_response = _counts([t.response[k] for k in i])
        if d is None or j is None:
            plain = _counts([t.plain[k] for k in i])
            return np.minimum(len(self.bos) + plain + n_response + 2, self.max_length)
        full = self.fixed(True) + n_response + t.query_len[i] + d.demo_len[np.asarray(j)]
        return np.minimum(full, self.max_length)

    def plain_sequence(self, t: EncodedSet, i: int) -> np.ndarray:
        """[BOS] plain prompt EOS response EOS of target i, cut from the query's left if long."""
        prompt = t.plain[i]
        room = self.max_length - len(self.bos) - 2 - len(t.response[i])
        if len(prompt) > room:  # rare: the plain prompt is cut token-wise like a pair's query
            prompt = self._cut_plain(t.xs[i], room, i)
        return np.concatenate([self.bos, prompt, self.eos, t.response[i], self.eos])

    def _cut_plain(self, x: str, room: int, i: int) -> np.ndarray:
        text, spans = self.plain_template.render({"query": x})
        return self._cut([text], [[spans["query"]]], [room], [i])[0]

    def pair_prompts(
        self, t: EncodedSet, i: np.ndarray, d: EncodedSet, j: np.ndarray
    ) -> tuple[list[np.ndarray], np.ndarray]:
        """[BOS] prompt of target i[k] shown demonstration j[k], and whether it had to be cut."""
        rendered = [self._render_pair(d.xs[b], d.ys[b], t.xs[a]) for a, b in zip(i, j, strict=True)]
        ids = self._tokenize([text for text, _ in rendered])
        room = self.max_length - len(self.bos) - 2 - _counts([t.response[a] for a in i])
        cut = np.array([len(p) > r for p, r in zip(ids, room, strict=True)], dtype=bool)
        over = np.flatnonzero(cut)
        if len(over):
            fields = self.example_template.fields
            demo = [_join(rendered[k][1][fields[0]], rendered[k][1][fields[1]]) for k in over]
            query = [rendered[k][1]["query"] for k in over]
            cuts = self._cut(
                [rendered[k][0] for k in over],
                [[a, b] for a, b in zip(demo, query, strict=True)],
                [int(room[k]) for k in over],
                [int(i[k]) for k in over],
            )
            for k, c in zip(over, cuts, strict=True):
                ids[k] = c
        return [np.concatenate([self.bos, p]) for p in ids], cut

    def pair_sequence(self, t: EncodedSet, i: int, prompt: np.ndarray) -> np.ndarray:
        """A pair's scored sequence from its [BOS] prompt: prompt EOS response EOS."""
        return np.concatenate([prompt, self.eos, t.response[i], self.eos])

    def _cut(
        self, texts: list[str], regions: list[list[Span]], rooms: list[int], targets: list[int]
    ) -> list[np.ndarray]:
        """Token ids of each text with tokens dropped from the left of each region in turn."""
        try:
            enc = tokenize_text(self.tokenizer, texts, offsets=True)
        except NotImplementedError:
            raise DeliftError(
                "model: cutting over-long prompts needs a fast (tokenizers) tokenizer"
            ) from None
        out = []
        for ids, offs, spans, room, target in zip(
            enc["input_ids"], enc["offset_mapping"], regions, rooms, targets, strict=True
        ):
            starts = np.array([s for s, _ in offs], dtype=np.int64)
            keep = np.ones(len(ids), dtype=bool)
            need = len(ids) - room
            for a, b in spans:
                inside = np.flatnonzero((starts >= a) & (starts < b) & keep)
                drop = inside[: max(need, 0)]
                keep[drop] = False
                need -= len(drop)
            if need > 0:
                n_response = self.max_length - room - len(self.bos) - 2
                raise ValueError(
                    f"target {target} cannot be scored: response has {n_response} tokens, which "
                    f"leave {room} for a prompt whose literal text needs {room + need}"
                )
            out.append(np.asarray(ids, dtype=np.int32)[keep])
        return out


def _join(first: Span, second: Span) -> Span:
    return (min(first[0], second[0]), max(first[1], second[1]))


def _counts(arrays: list[np.ndarray]) -> np.ndarray:
    return np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
