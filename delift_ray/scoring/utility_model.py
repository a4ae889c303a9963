"""Batched teacher-forced distances (SPEC §3): d0[i] (plain prompt) and d1[i, j] (with example j).

For the T scored tokens of target i (its response and a closing EOS), p_t is the model's
probability of the gold token. Distance "d" is sqrt(mean_t (1 - p_t)^2), in [0, 1]; distance
"cpmi" is mean_t -log p_t, so that U = d0 - d1 = mean_t (log p_with - log p_plain). Either way
U[i, j] = d0[i] - d1[i, j] > 0 means demonstration j helps target i.

Every sequence is the one a plain per-pair loop builds (`templates.Prompts`). Two executors:

- packed (`scoring.prefix_sharing`, the default, on models whose layers all attend over
  per-token keys; see `attention`): a demonstration's pairs share the longest token prefix their
  whole-text prompts really have in common. A row of at most `packed_row_tokens` tokens holds that
  prefix once, then its targets' suffixes, each attending to the prefix and itself with positions
  continuing from the prefix (sequences with nothing to share are packed side by side the same
  way). Each group takes the fewest rows first-fit decreasing finds, and its pieces fill rows
  first-fit decreasing too. Rows of similar length go through one forward as a right-padded
  batch (within `max_batch_tokens`), no KV cache, no copies; logits only where a scored token
  is predicted.
- padded (sharing off, or a model sharing cannot be exact for): sequences sorted longest first
  in right-padded batches of at most `max_batch_tokens` padded tokens and `max_batch_size` rows.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from delift_ray.config import ScoringConfig, TemplatesConfig
from delift_ray.data.examples import ChatParts
from delift_ray.progress import ProgressFn
from delift_ray.scoring.attention import (
    PackedRow,
    layer_windows,
    packed_mask,
    sharing_refusal,
)
from delift_ray.scoring.templates import EncodedSet, Prompts

Scored = tuple[np.ndarray, int]  # a sequence's ids and how many of its last tokens are scored


@dataclass
class _Group:
    """A prefix and the suffixes that follow it; out[k] is suffix k's place in the output."""

    prefix: np.ndarray
    suffixes: list[np.ndarray] = field(default_factory=list)
    scored: list[int] = field(default_factory=list)
    out: list[int] = field(default_factory=list)

    def add(self, suffix: np.ndarray, scored: int, out: int) -> None:
        """Append one suffix."""
        self.suffixes.append(suffix)
        self.scored.append(scored)
        self.out.append(out)


class UtilityModel:
    """Scores d0 and d1 with a causal LM that already lives on `device`."""

    def __init__(
        self,
        model,
        tokenizer,
        templates: TemplatesConfig,
        scoring: ScoringConfig,
        max_length: int,
        device: str = "cpu",
    ) -> None:
        self.model = model.eval()
        self.prompts = Prompts(tokenizer, templates, max_length)
        self.scoring = scoring
        self.device = torch.device(device)
        params = inspect.signature(model.forward).parameters
        # models that accept it project only the positions that predict scored tokens
        self.keep_logits = "logits_to_keep" in params
        self.refusal = sharing_refusal(model.config, type(model))
        self.packed = scoring.prefix_sharing and self.refusal is None
        self.layers = layer_windows(model.config)
        self.kernel = getattr(model.config, "_attn_implementation", None) or "eager"

    def encode(
        self, xs: list[str], ys: list[str], chat: list[ChatParts | None] | None = None
    ) -> EncodedSet:
        """Tokenize prompts xs and responses ys (chat-template rows laid out as served)."""
        return self.prompts.encode(xs, ys, chat)

    def too_long(self, enc: EncodedSet) -> list[str | None]:
        """Per example, None or why its response cannot be scored within max_length."""
        return self.prompts.too_long(enc)

    def plain(
        self, targets: EncodedSet, idx: np.ndarray | None = None, progress: ProgressFn | None = None
    ) -> np.ndarray:
        """d0 of the targets at idx (all if None), float64."""
        idx = np.arange(len(targets)) if idx is None else np.asarray(idx, dtype=np.int64)
        seqs = [
            (
                self.prompts.plain_sequence(targets, int(k)),
                self.prompts.scored_tokens(targets, int(k)),
            )
            for k in idx
        ]
        return self._score_unshared(seqs, _ticker(progress, len(idx)))

    def pairs(
        self,
        targets: EncodedSet,
        demos: EncodedSet,
        i: np.ndarray,
        j: np.ndarray,
        progress: ProgressFn | None = None,
    ) -> np.ndarray:
        """d1 of target i[k] shown demonstration j[k], for each k, float64."""
        i, j = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)
        if i.shape != j.shape or i.ndim != 1:
            raise ValueError(f"i and j must be 1-D of one length, got {i.shape} and {j.shape}")
        prompts, cut = self.prompts.pair_prompts(targets, i, demos, j)
        tick = _ticker(progress, len(i))
        scored = [self.prompts.scored_tokens(targets, int(a)) for a in i]
        if not self.packed:
            seqs = [
                (self.prompts.pair_sequence(targets, int(a), p), n)
                for a, p, n in zip(i, prompts, scored, strict=True)
            ]
            return self._score_unshared(seqs, tick)
        groups = []
        for k in np.flatnonzero(cut):  # a cut demonstration is not the same for its targets
            groups.append(_Group(np.zeros(0, np.int32)))
            groups[-1].add(
                self.prompts.pair_sequence(targets, int(i[k]), prompts[k]), scored[k], int(k)
            )
        whole = np.flatnonzero(~cut)
        whole = whole[np.argsort(j[whole], kind="stable")]
        for members in np.split(whole, np.flatnonzero(np.diff(j[whole])) + 1):
            if not len(members):
                continue
            shared = _common_prefix([prompts[k] for k in members])
            group = _Group(prompts[members[0]][:shared])
            for k in members:
                suffix = self.prompts.pair_sequence(targets, int(i[k]), prompts[k])[shared:]
                group.add(suffix, scored[k], int(k))
            groups.append(group)
        return self._score_packed(groups, len(i), tick)

    def _score_unshared(self, seqs: list[Scored], tick: Callable[[int], None]) -> np.ndarray:
        """Each sequence on its own: packed side by side, or in padded batches."""
        if self.packed:
            groups = []
            for k, (ids, n) in enumerate(seqs):
                groups.append(_Group(np.zeros(0, np.int32)))
                groups[-1].add(ids, n, k)
            return self._score_packed(groups, len(seqs), tick)
        return self._score_padded(seqs, tick)

    # -- packed rows ---------------------------------------------------------------------------

    def _score_packed(
        self, groups: list[_Group], n: int, tick: Callable[[int], None]
    ) -> np.ndarray:
        """Distances of every group's suffixes, several packed rows per forward; output order."""
        cfg = self.scoring
        out = np.empty(n, dtype=np.float64)
        rows = _pack(groups, cfg.packed_row_tokens, cfg.max_batch_size)
        rows.sort(key=lambda r: -r.used)
        start = 0
        while start < len(rows):  # longest first, each batch padded at most 1/8 of its rows
            width = rows[start].used
            end = start + 1
            while (
                end < len(rows)
                and (end - start + 1) * width <= cfg.max_batch_tokens
                and rows[end].used * 8 >= width * 7
            ):
                end += 1
            batch = rows[start:end]
            where = [w for r in batch for w in r.where]
            out[where] = self._forward_packed(batch)
            tick(len(where))
            start = end
        return out

    @torch.inference_mode()
    def _forward_packed(self, rows: list[_Row]) -> np.ndarray:
        """Distances of the rows' suffixes, in row then suffix order, from one forward pass."""
        packed = _stack(rows, pad=self.prompts.eos[0])
        counts = np.array([n for r in rows for _, n in r.scored])
        at = [(b, np.arange(e - n - 1, e - 1)) for b, r in enumerate(rows) for e, n in r.scored]
        row = np.concatenate([np.full(len(c), b) for b, c in at])
        col = np.concatenate([c for _, c in at])
        index = (torch.as_tensor(row, device=self.device), torch.as_tensor(col, device=self.device))
        dtype = next(self.model.parameters()).dtype
        head = self.model.get_output_embeddings()
        # the output layer sees only the hidden states that predict scored tokens
        hook = (
            None
            if head is None
            else head.register_forward_pre_hook(lambda _m, args: (args[0][index][None],))
        )
        try:
            logits = self.model(
                input_ids=torch.as_tensor(packed.ids.astype(np.int64), device=self.device),
                attention_mask=packed_mask(packed, self.layers, self.kernel, dtype, self.device),
                position_ids=torch.as_tensor(packed.position.astype(np.int64), device=self.device),
                use_cache=False,
            ).logits
        finally:
            if hook is not None:
                hook.remove()
        logits = logits[0] if hook is not None else logits[index]
        gold = torch.as_tensor(packed.ids[row, col + 1].astype(np.int64), device=self.device)
        return self._distance(logits, gold, counts)

    # -- padded batches ------------------------------------------------------------------------

    def _score_padded(self, seqs: list[Scored], tick: Callable[[int], None]) -> np.ndarray:
        """Sequences longest first in right-padded batches; input order out."""
        lengths = np.array([len(s) for s, _ in seqs], dtype=np.int64)
        out = np.empty(len(seqs), dtype=np.float64)
        order = np.argsort(-lengths, kind="stable")
        for rows in self._batches(lengths[order]):
            ks = order[rows]
            out[ks] = self._forward_padded([seqs[int(k)] for k in ks])
            tick(len(ks))
        return out

    def _batches(self, lengths: np.ndarray) -> Iterator[slice]:
        """Slices of longest-first lengths into batches within max_batch_tokens/size."""
        start, cfg = 0, self.scoring
        while start < len(lengths):
            fits = cfg.max_batch_tokens // int(lengths[start])
            end = start + max(1, min(cfg.max_batch_size, fits, len(lengths) - start))
            yield slice(start, end)
            start = end

    @torch.inference_mode()
    def _forward_padded(self, seqs: list[Scored]) -> np.ndarray:
        """Distance of each (ids, n_scored) sequence from one right-padded pass."""
        counts = np.array([n for _, n in seqs])
        width = max(len(s) for s, _ in seqs)
        ids = np.full((len(seqs), width), self.prompts.eos[0], dtype=np.int64)
        mask = np.zeros((len(seqs), width), dtype=np.int64)
        for b, (s, _) in enumerate(seqs):
            ids[b, : len(s)] = s
            mask[b, : len(s)] = 1
        # (row, position) of each logit that predicts a scored token: the last n_scored of a row
        row = np.repeat(np.arange(len(seqs)), counts)
        col = np.concatenate([np.arange(len(s) - n - 1, len(s) - 1) for s, n in seqs])
        first = int(col.min()) if self.keep_logits else 0
        extra: dict[str, Any] = {"logits_to_keep": width - first} if self.keep_logits else {}
        logits = self.model(
            input_ids=torch.as_tensor(ids, device=self.device),
            attention_mask=torch.as_tensor(mask, device=self.device),
            use_cache=False,
            **extra,
        ).logits
        at = (
            torch.as_tensor(row, device=self.device),
            torch.as_tensor(col - first, device=self.device),
        )
        gold = torch.as_tensor(ids[row, col + 1], device=self.device)
        return self._distance(logits[at], gold, counts)

    def _distance(self, logits: torch.Tensor, gold: torch.Tensor, counts: np.ndarray) -> np.ndarray:
        """Per sequence, the distance from its scored tokens' logits (consecutive, counts each)."""
        logp = logits.float().log_softmax(-1).gather(1, gold[:, None])[:, 0]
        logp_np = logp.double().cpu().numpy()
        starts = np.cumsum(counts) - counts
        if self.scoring.distance == "cpmi":
            return -np.add.reduceat(logp_np, starts) / counts
        return np.sqrt(np.add.reduceat(np.expm1(logp_np) ** 2, starts) / counts)  # (1 - p)^2


def _common_prefix(seqs: list[np.ndarray]) -> int:
    """Length of the longest token prefix every sequence has."""
    shortest = min(len(s) for s in seqs)
    first = seqs[0][:shortest]
    same = np.ones(shortest, dtype=bool)
    for s in seqs[1:]:
        same &= s[:shortest] == first
    return shortest if same.all() else int(np.argmin(same))


@dataclass
class _Row:
    """A packed row being built: its segments, and per suffix (end column, scored tokens) and
    output index."""

    ids: list[np.ndarray] = field(default_factory=list)
    group: list[np.ndarray] = field(default_factory=list)
    suffix: list[np.ndarray] = field(default_factory=list)
    position: list[np.ndarray] = field(default_factory=list)
    scored: list[tuple[int, int]] = field(default_factory=list)
    where: list[int] = field(default_factory=list)
    used: int = 0

    def add(self, g: _Group, members: list[int]) -> None:
        """Append g's prefix, then its suffixes `members`, as one segment group."""
        tag = len(self.ids) + 1  # a fresh tag per group in the row; 0 marks padding
        pieces = [(g.prefix, 0)] + [(g.suffixes[k], number) for number, k in enumerate(members, 1)]
        for ids, number in pieces:
            self.ids.append(ids)
            self.group.append(np.full(len(ids), tag))
            self.suffix.append(np.full(len(ids), number))
            self.position.append(len(g.prefix) * (number > 0) + np.arange(len(ids)))
            self.used += len(ids)
            if number:
                self.scored.append((self.used, g.scored[members[number - 1]]))
                self.where.append(g.out[members[number - 1]])


def _chunks(g: _Group, row_tokens: int, max_sequences: int) -> list[list[int]]:
    """g's suffixes split into the fewest rows' worth that first-fit decreasing finds: each at
    most row_tokens tokens with the prefix (a suffix too long for that alone) and max_sequences
    suffixes."""
    room = row_tokens - len(g.prefix)
    bins: list[list[int]] = []
    free: list[int] = []
    for k in sorted(range(len(g.suffixes)), key=lambda k: -len(g.suffixes[k])):
        size = len(g.suffixes[k])
        b = next(
            (b for b, f in enumerate(free) if f >= size and len(bins[b]) < max_sequences), None
        )
        if b is None:
            bins.append([])
            free.append(room)
            b = len(bins) - 1
        bins[b].append(k)
        free[b] -= size
    return bins


def _pack(groups: list[_Group], row_tokens: int, max_sequences: int) -> list[_Row]:
    """Every suffix in exactly one row of at most row_tokens tokens and max_sequences suffixes
    (a prefix and suffix too long for that alone get their own row): each group in the fewest
    rows, its prefix once in each, and the pieces first-fit decreasing into the rows."""
    pieces = [
        (len(g.prefix) + sum(len(g.suffixes[k]) for k in members), g, members)
        for g in groups
        for members in _chunks(g, row_tokens, max_sequences)
    ]
    pieces.sort(key=lambda p: -p[0])
    rows: list[_Row] = []
    for size, g, members in pieces:
        row = next(
            (
                r
                for r in rows
                if r.used + size <= row_tokens and len(r.where) + len(members) <= max_sequences
            ),
            None,
        )
        if row is None:
            rows.append(_Row())
            row = rows[-1]
        row.add(g, members)
    return rows


def _stack(rows: list[_Row], pad: int) -> PackedRow:
    """The rows as one (B, L) batch, right-padded to the longest: padding is a group of its own,
    so that no real token sees it."""
    width = max(r.used for r in rows)

    def column(parts: list[np.ndarray], r: _Row, value: int | None) -> np.ndarray:
        """One row's parts, then padding of `value` (None: positions 0, 1, ...)."""
        tail = np.arange(width - r.used) if value is None else np.full(width - r.used, value)
        return np.concatenate([*parts, tail])

    return PackedRow(
        np.stack([column(r.ids, r, pad) for r in rows]),
        np.stack([column(r.group, r, 0) for r in rows]),
        np.stack([column(r.suffix, r, 0) for r in rows]),
        np.stack([column(r.position, r, None) for r in rows]),
    )


def _ticker(progress: ProgressFn | None, total: int) -> Callable[[int], None]:
    """A callback that adds up finished sequences and reports (done, total) to `progress`."""
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    return tick
