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

A chat row that the model's chat template rendered (data/chat.py) is scored as the model is
served: its sequence is tok(x) tok(y), x the template's prompt with its generation prompt and y
the reply with the template's end-of-turn text, tokenized with the template's special tokens as
control tokens (chat rows holding special-token strings were rejected when read). The template
places BOS and the end-of-turn tokens itself, so none is added; the scored tokens are y's. Its
plain prompt is x itself; shown a demonstration, the last user message's text is replaced by the
with-example template filled with the demonstration's user message and reply (a chat
demonstration's, or an alpaca demonstration's x and y) and the query, rendered in the same chat
frame. Cuts drop tokens from that message's fields, never from the template's text.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np

from delift_ray.config import TemplatesConfig
from delift_ray.data.examples import ChatParts
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
    chat: list[ChatParts | None]  # a chat-template row's parts: laid out as served

    def __len__(self) -> int:
        return len(self.ys)

    @property
    def served(self) -> np.ndarray:
        """Per example, whether it is laid out as its chat template serves it."""
        return np.array([c is not None for c in self.chat], dtype=bool)

    def take(self, keep: list[int]) -> EncodedSet:
        """The examples at positions `keep`, in that order."""
        return EncodedSet(
            [self.xs[k] for k in keep],
            [self.ys[k] for k in keep],
            [self.plain[k] for k in keep],
            [self.response[k] for k in keep],
            self.query_len[keep],
            self.demo_len[keep],
            [self.chat[k] for k in keep],
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


def tokenize_text(tokenizer, texts: list[str], offsets: bool = False, served: bool = False) -> dict:
    """Token ids (and character offsets) of each whole text, special-token strings as text (as
    control tokens if `served`: chat-template renderings, whose data holds none)."""
    return tokenizer(
        texts,
        add_special_tokens=False,
        split_special_tokens=not served,
        return_offsets_mapping=offsets,
        return_attention_mask=False,  # building these costs 6x the tokenizing itself
        return_token_type_ids=False,
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
        literal_len = [len(ids) for ids in self._tokenize(literal_only)]
        # BOS, the literals and two EOS, indexed by "with example?"
        self._fixed = [len(self.bos) + n + 2 for n in literal_len]
        self._example_literals = literal_len[1]  # what a chat frame adds to show an example

    def _tokenize(self, texts: list[str], served: bool = False) -> list[np.ndarray]:
        if not texts:
            return []
        ids = tokenize_text(self.tokenizer, texts, served=served)["input_ids"]
        return [np.asarray(t, dtype=np.int32) for t in ids]

    def _tokenize_each(self, texts: list[str], served: np.ndarray) -> list[np.ndarray]:
        """Token ids of each text, chat-template renderings (`served`) with control tokens."""
        out: list[np.ndarray] = [np.zeros(0, np.int32)] * len(texts)
        for flag in (False, True):
            at = [k for k in range(len(texts)) if served[k] == flag]
            for k, ids in zip(at, self._tokenize([texts[k] for k in at], flag), strict=True):
                out[k] = ids
        return out

    def encode(
        self, xs: list[str], ys: list[str], chat: list[ChatParts | None] | None = None
    ) -> EncodedSet:
        """Tokenize each (prompt x, response y) example's plain prompt and response once; an
        example with chat parts is laid out as its chat template serves it."""
        if len(xs) != len(ys):
            raise ValueError(f"{len(xs)} prompts but {len(ys)} responses")
        parts: list[ChatParts | None] = list(chat) if chat is not None else [None] * len(xs)
        served = np.array([c is not None for c in parts], dtype=bool)
        plain = [
            x if c is not None else self.plain_template.render({"query": x})[0]
            for x, c in zip(xs, parts, strict=True)
        ]
        fields = [_example_fields(x, y, c) for x, y, c in zip(xs, ys, parts, strict=True)]
        return EncodedSet(
            xs=list(xs),
            ys=list(ys),
            plain=self._tokenize_each(plain, served),
            response=self._tokenize_each(list(ys), served),
            query_len=_counts(self._tokenize([c.query if c else x for x, c in zip(xs, parts)])),
            demo_len=_counts(self._tokenize([self._demo_text(*f) for f in fields])),
            chat=parts,
        )

    def _demo_text(self, x: str, y: str) -> str:
        text, spans = self._render_pair(x, y, "")
        (a, _), (_, b) = (spans[name] for name in self.example_template.fields[:2])
        return text[a:b]

    def scored_tokens(self, t: EncodedSet, i: int) -> int:
        """Tokens scored for target i: its response and the closing EOS (a chat row's response
        ends with the template's own end-of-turn tokens)."""
        return len(t.response[i]) + (t.chat[i] is None)

    def _render_pair(self, x: str, y: str, query: str) -> tuple[str, dict[str, Span]]:
        values = {"example_prompt": x, "example_response": y, "query": query}
        return self.example_template.render(values)

    def fixed(self, with_example: bool) -> int:
        """Tokens that are never cut, besides the response: BOS, literals, two EOS."""
        return self._fixed[with_example]

    def too_long(self, enc: EncodedSet) -> list[str | None]:
        """Per example, why it cannot be scored as a target (None if it can)."""
        fixed = max(self._fixed) + EDGE_SLACK
        return [
            self._reason(len(r), fixed if c is None else self._frame(enc, k), c is not None)
            for k, (r, c) in enumerate(zip(enc.response, enc.chat, strict=True))
        ]

    def _frame(self, enc: EncodedSet, k: int) -> int:
        """A chat row's tokens that are never cut: its chat frame and the example's literals."""
        frame = max(len(enc.plain[k]) - int(enc.query_len[k]), 0)
        return frame + self._example_literals + EDGE_SLACK

    def _reason(self, n_response: int, fixed: int, chat: bool) -> str | None:
        if n_response + fixed <= self.max_length:
            return None
        what = "the chat template's and the scoring template's" if chat else "the template's"
        return (
            f"response has {n_response} tokens; with {what} {fixed} fixed tokens it "
            f"exceeds the model limit of {self.max_length}"
        )

    def lengths(
        self, t: EncodedSet, i: np.ndarray, d: EncodedSet | None = None, j: np.ndarray | None = None
    ) -> np.ndarray:
        """Estimated length of each sequence (pieces' token counts added; for plans, not cuts)."""
        i = np.asarray(i, dtype=np.int64)
        n_response = _counts([t.response[k] for k in i])
        served = t.served[i] if len(i) else np.zeros(0, bool)
        plain = _counts([t.plain[k] for k in i])
        if d is None or j is None:
            layout = np.where(served, 0, len(self.bos) + 2)
            return np.minimum(layout + plain + n_response, self.max_length)
        demo = d.demo_len[np.asarray(j)]
        framed = plain + self._example_literals + demo  # the query is in the plain prompt
        templated = self.fixed(True) + t.query_len[i] + demo
        return np.minimum(np.where(served, framed, templated) + n_response, self.max_length)

    def plain_sequence(self, t: EncodedSet, i: int) -> np.ndarray:
        """[BOS] plain prompt EOS response EOS of target i (a chat row: x y), cut from the
        query's left if long."""
        prompt, chat = t.plain[i], t.chat[i]
        room = self.max_length - self._layout_len(chat) - len(t.response[i])
        if len(prompt) > room:  # rare: the plain prompt is cut token-wise like a pair's query
            prompt = self._cut_plain(t.xs[i], chat, room, i)
        return self._sequence(chat, prompt, t.response[i], plain=True)

    def _layout_len(self, chat: ChatParts | None) -> int:
        """Tokens the layout adds around prompt and response: BOS and two EOS, none for chat."""
        return 0 if chat is not None else len(self.bos) + 2

    def _sequence(
        self, chat: ChatParts | None, prompt: np.ndarray, response: np.ndarray, plain: bool
    ) -> np.ndarray:
        """The scored sequence from a prompt (with its BOS unless `plain`) and the response."""
        if chat is not None:
            return np.concatenate([prompt, response])
        head = [self.bos, prompt] if plain else [prompt]
        return np.concatenate([*head, self.eos, response, self.eos])

    def _cut_plain(self, x: str, chat: ChatParts | None, room: int, i: int) -> np.ndarray:
        if chat is not None:
            span = (chat.query_at, chat.query_at + len(chat.query))
            return self._cut([x], [[span]], [room], [i], served=True)[0]
        text, spans = self.plain_template.render({"query": x})
        return self._cut([text], [[spans["query"]]], [room], [i])[0]

    def pair_prompts(
        self, t: EncodedSet, i: np.ndarray, d: EncodedSet, j: np.ndarray
    ) -> tuple[list[np.ndarray], np.ndarray]:
        """[BOS] prompt of target i[k] shown demonstration j[k], and whether it had to be cut."""
        i, j = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)
        rendered = [self._pair_text(t, int(a), d, int(b)) for a, b in zip(i, j, strict=True)]
        served = t.served[i] if len(i) else np.zeros(0, bool)
        ids = self._tokenize_each([text for text, _ in rendered], served)
        room = self.max_length - _counts([t.response[a] for a in i])
        room -= np.where(served, 0, len(self.bos) + 2)
        cut = np.array([len(p) > r for p, r in zip(ids, room, strict=True)], dtype=bool)
        fields = self.example_template.fields
        for flag in (False, True):
            over = np.flatnonzero(cut & (served == flag))
            if not len(over):
                continue
            demo = [_join(rendered[k][1][fields[0]], rendered[k][1][fields[1]]) for k in over]
            query = [rendered[k][1]["query"] for k in over]
            cuts = self._cut(
                [rendered[k][0] for k in over],
                [[a, b] for a, b in zip(demo, query, strict=True)],
                [int(room[k]) for k in over],
                [int(i[k]) for k in over],
                served=flag,
            )
            for k, c in zip(over, cuts, strict=True):
                ids[k] = c
        return [p if s else np.concatenate([self.bos, p]) for p, s in zip(ids, served)], cut

    def _pair_text(
        self, t: EncodedSet, a: int, d: EncodedSet, b: int
    ) -> tuple[str, dict[str, Span]]:
        """Target a's prompt showing demonstration b, and the fields' spans: the with-example
        template, in target a's chat frame (in place of its user message) if it has one."""
        example = _example_fields(d.xs[b], d.ys[b], d.chat[b])
        chat = t.chat[a]
        if chat is None:
            return self._render_pair(*example, t.xs[a])
        text, spans = self._render_pair(*example, chat.query)
        x, at = t.xs[a], chat.query_at
        framed = x[:at] + text + x[at + len(chat.query) :]
        return framed, {name: (p + at, q + at) for name, (p, q) in spans.items()}

    def pair_sequence(self, t: EncodedSet, i: int, prompt: np.ndarray) -> np.ndarray:
        """A pair's scored sequence from its [BOS] prompt: prompt EOS response EOS (a chat row:
        prompt response)."""
        return self._sequence(t.chat[i], prompt, t.response[i], plain=False)

    def _cut(
        self,
        texts: list[str],
        regions: list[list[Span]],
        rooms: list[int],
        targets: list[int],
        served: bool = False,
    ) -> list[np.ndarray]:
        """Token ids of each text with tokens dropped from the left of each region in turn."""
        out = cut_regions(self.tokenizer, texts, regions, rooms, served)
        for ids, room, target in zip(out, rooms, targets, strict=True):
            if len(ids) > room:
                n_response = self.max_length - room - (0 if served else len(self.bos) + 2)
                raise ValueError(
                    f"target {target} cannot be scored: response has {n_response} tokens, which "
                    f"leave {room} for a prompt whose literal text needs {len(ids)}"
                )
        return out


def cut_regions(
    tokenizer, texts: list[str], regions: list[list[Span]], rooms: list[int], served: bool = False
) -> list[np.ndarray]:
    """Token ids of each text, tokens dropped from the left of each character region in turn
    until it fits its room (longer than the room where the regions alone cannot make it fit)."""
    try:
        enc = tokenize_text(tokenizer, texts, offsets=True, served=served)
    except NotImplementedError:
        raise DeliftError(
            "model: cutting over-long prompts needs a fast (tokenizers) tokenizer"
        ) from None
    out = []
    for ids, offs, spans, room in zip(
        enc["input_ids"], enc["offset_mapping"], regions, rooms, strict=True
    ):
        starts = np.array([s for s, _ in offs], dtype=np.int64)
        keep = np.ones(len(ids), dtype=bool)
        need = len(ids) - room
        for a, b in spans:
            inside = np.flatnonzero((starts >= a) & (starts < b) & keep)
            drop = inside[: max(need, 0)]
            keep[drop] = False
            need -= len(drop)
        out.append(np.asarray(ids, dtype=np.int32)[keep])
    return out


def cut_query(tokenizer, x: str, chat: ChatParts, room: int) -> list[int] | None:
    """A chat row's served prompt in `room` tokens, cut from the left of its last user message
    (the template's text stays); None if the rest alone does not fit."""
    span = (chat.query_at, chat.query_at + len(chat.query))
    ids = cut_regions(tokenizer, [x], [[span]], [room], served=True)[0]
    return ids.tolist() if len(ids) <= room else None


def _example_fields(x: str, y: str, chat: ChatParts | None) -> tuple[str, str]:
    """What an example shows as a demonstration: x and y, or a chat row's user text and reply."""
    return (chat.query, chat.reply) if chat is not None else (x, y)


def _join(first: Span, second: Span) -> Span:
    return (min(first[0], second[0]), max(first[1], second[1]))


def _counts(arrays: list[np.ndarray]) -> np.ndarray:
    return np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
