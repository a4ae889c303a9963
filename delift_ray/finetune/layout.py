"""The token layout shared by training and evaluation, and the response-only loss.

Every example is laid out as ``[BOS] x EOS y EOS`` (the scoring layout without a template); the
labels are -100 on BOS, the prompt and its EOS, so the loss covers the response and the final
EOS. A chat row its model's chat template rendered is laid out as scoring lays it out, as the
model is served: ``x y``, tokenized with the template's special tokens, nothing added; the loss
covers y (the reply and the template's end-of-turn tokens).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from delift_ray.data.examples import ChatParts
from delift_ray.scoring.templates import cut_query, tokenize_text, wants_bos

IGNORE = -100

Pair = tuple[list[int], int]  # token ids of one example, number of prompt positions


@dataclass(frozen=True)
class Layout:
    """The token layout shared by training and evaluation: [BOS] x EOS y EOS."""

    bos: tuple[int, ...]
    eos: int

    @classmethod
    def of(cls, tokenizer: Any, add_bos: str) -> Layout:
        """The layout for a tokenizer; BOS per templates.add_bos (auto/always/never)."""
        bos = (tokenizer.bos_token_id,) if wants_bos(tokenizer, add_bos) else ()
        return cls(bos=bos, eos=tokenizer.eos_token_id)

    def prompt(self, x: Sequence[int], room: int) -> list[int]:
        """[BOS] x EOS in at most `room` tokens; x loses tokens from its left if it must."""
        keep = max(room - len(self.bos) - 1, 0)
        return [*self.bos, *x[max(len(x) - keep, 0) :], self.eos]

    def pair(self, x: Sequence[int], y: Sequence[int], limit: int) -> Pair | None:
        """([BOS] x EOS y EOS, prompt length) in at most `limit` tokens; None if y cannot fit."""
        room = limit - len(y) - 1
        if room < len(self.bos) + 1:
            return None
        prompt = self.prompt(x, room)
        return [*prompt, *y, self.eos], len(prompt)


def tokenize(tokenizer: Any, texts: Sequence[str], served: bool = False) -> list[list[int]]:
    """Token ids of each text, without special tokens (a chat template's rendering, `served`,
    with its special tokens, as scoring tokenizes it)."""
    if not texts:
        return []
    if served:
        return tokenize_text(tokenizer, list(texts), served=True)["input_ids"]
    return tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]


def tokenize_rows(tokenizer: Any, texts: Sequence[str], served: Sequence[bool]) -> list[list[int]]:
    """Token ids of each text, tokenized as `tokenize` does for its kind of row."""
    out: list[list[int]] = [[] for _ in texts]
    for flag in (False, True):
        at = [k for k, s in enumerate(served) if s == flag]
        for k, ids in zip(at, tokenize(tokenizer, [texts[k] for k in at], flag), strict=True):
            out[k] = ids
    return out


def served_prompt(
    tokenizer: Any, x: str, ids: list[int], chat: ChatParts, room: int
) -> list[int] | None:
    """A served row's prompt ids in `room` tokens: whole, or cut from the left of its last user
    message as scoring cuts it (the template's text stays); None if that cannot fit."""
    return ids if len(ids) <= room else cut_query(tokenizer, x, chat, room)


def encode_pairs(
    tokenizer: Any,
    layout: Layout,
    xs: Sequence[str],
    ys: Sequence[str],
    limit: int,
    chat: Sequence[ChatParts | None] | None = None,
) -> list[Pair | None]:
    """The layout of each (x, y) within `limit` tokens (None where y does not fit); rows with
    chat parts laid out as served, x y."""
    parts = list(chat) if chat is not None else [None] * len(xs)
    served = [c is not None for c in parts]
    x_ids, y_ids = tokenize_rows(tokenizer, xs, served), tokenize_rows(tokenizer, ys, served)
    out: list[Pair | None] = []
    for k, (x, y, c) in enumerate(zip(x_ids, y_ids, parts, strict=True)):
        if c is None:
            out.append(layout.pair(x, y, limit))
            continue
        prompt = served_prompt(tokenizer, xs[k], x, c, limit - len(y))
        out.append(None if prompt is None else ([*prompt, *y], len(prompt)))
    return out


def collate(pairs: Sequence[Pair], pad_id: int) -> dict[str, Any]:
    """Right-padded input_ids and attention_mask, and labels that are -100 off the response."""
    import torch

    width = max(len(ids) for ids, _ in pairs)
    input_ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(pairs), width), dtype=torch.long)
    labels = torch.full((len(pairs), width), IGNORE, dtype=torch.long)
    for row, (ids, n_prompt) in enumerate(pairs):
        tokens = torch.tensor(ids, dtype=torch.long)
        input_ids[row, : len(ids)] = tokens
        attention_mask[row, : len(ids)] = 1
        labels[row, n_prompt : len(ids)] = tokens[n_prompt:]
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def response_nll(model: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
    """Per row: the summed NLL of the labelled tokens (teacher forcing) and how many there are."""
    import torch

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    target = batch["labels"][:, 1:]
    scored = target != IGNORE
    nll = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), target.clamp(min=0), reduction="none"
    )
    return (nll * scored).sum(1), scored.sum(1)


def mean_response_loss(
    model: Any, pairs: Sequence[Pair], pad_id: int, batch_size: int = 16
) -> float:
    """Token-weighted mean response NLL of `pairs` under `model`, without gradients."""
    import torch

    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(pairs), batch_size):
            batch = collate(pairs[start : start + batch_size], pad_id)
            nll, n = response_nll(model, {k: v.to(device) for k, v in batch.items()})
            total, count = total + float(nll.sum()), count + int(n.sum())
    return total / max(count, 1)
