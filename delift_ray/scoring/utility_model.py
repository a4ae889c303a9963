"""Batched teacher-forced distances (SPEC §3): d0[i] (plain prompt) and d1[i, j] (with example j).

For the T scored tokens of target i (its response and a closing EOS), p_t is the model's
probability of the gold token. Distance "d" is sqrt(mean_t (1 - p_t)^2), in [0, 1]; distance
"cpmi" is mean_t -log p_t, so that U = d0 - d1 = mean_t (log p_with - log p_plain). Either way
U[i, j] = d0[i] - d1[i, j] > 0 means demonstration j helps target i.

Sequences are sorted longest first and packed into right-padded batches of at most
`max_batch_tokens` padded tokens and `max_batch_size` rows; one forward per batch, and only the
rows of the logits that predict scored tokens go through log_softmax.

Prefix sharing (`scoring.prefix_sharing`): a pair whose sequence fits max_length whole starts
with its demonstration's prefix `[BOS] head demo_j mid`, the same for every target. Such pairs
are scored in chunks of demonstrations (longest prefix first, as many as one batch of prefixes
holds): one forward over the chunk's right-padded prefixes keeps their KV cache, then the
suffixes `query_i EOS response_i EOS` of the chunk's pairs run in right-padded batches against a
per-batch copy of the rows they need. A suffix row attends to its prefix's tokens (the padding
between prefix and suffix is masked) and continues its positions from its prefix's length.
A suffix batch counts, per row, the chunk's padded prefix length plus its padded suffix length
against `max_batch_tokens`, so its keys and values take no more room than an unshared batch's;
on top of that the chunk's cache is held (at most `max_batch_tokens` tokens, as a prefix batch).
The cache is never changed: each batch gets a shallow copy that selects its rows. Pairs whose
demonstration is cut (long targets) take the unshared path. Padding sits inside the cache, so
the model must keep keys and values per token (attention layers), not a recurrent state; a
sliding-window layer is exact only for sequences within its window.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from delift_ray.config import ScoringConfig, TemplatesConfig
from delift_ray.progress import ProgressFn
from delift_ray.scoring.templates import EncodedSet, Prompts


@dataclass
class _Past:
    """A KV cache of right-padded prefixes: its rows' attention masks and true lengths."""

    cache: Any  # transformers Cache
    mask: np.ndarray  # (rows, padded prefix length), 1 on prefix tokens
    length: np.ndarray  # (rows,), where each row's next position starts

    def select(self, rows: np.ndarray, device: torch.device) -> _Past:
        """The given rows (repeats allowed) in a new cache; this one is left as it was."""
        cache = copy.copy(self.cache)
        cache.layers = [copy.copy(layer) for layer in self.cache.layers]
        cache.batch_select_indices(torch.as_tensor(rows, device=device))
        return _Past(cache, self.mask[rows], self.length[rows])


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
        # models that accept it project only the last positions onto the vocabulary
        self.keep_logits = "logits_to_keep" in params
        # transformers 5 names the KV cache argument and output `cache`; older models did not
        self.cache_arg = "cache" if "cache" in params else "past_key_values"

    def encode(self, xs: list[str], ys: list[str]) -> EncodedSet:
        """Tokenize prompts xs and responses ys into reusable pieces."""
        return self.prompts.encode(xs, ys)

    def too_long(self, enc: EncodedSet) -> list[str | None]:
        """Per example, None or why its response cannot be scored within max_length."""
        return self.prompts.too_long(enc)

    def plain(
        self, targets: EncodedSet, idx: np.ndarray | None = None, progress: ProgressFn | None = None
    ) -> np.ndarray:
        """d0 of the targets at idx (all if None), float64."""
        idx = np.arange(len(targets)) if idx is None else np.asarray(idx, dtype=np.int64)
        lengths = self.prompts.lengths(targets, idx)
        tick = _ticker(progress, len(idx))
        return self._distances(lengths, lambda k: self._sequence(targets, idx[k]), tick)

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
        lengths = self.prompts.lengths(targets, i, demos, j)
        tick = _ticker(progress, len(i))
        shared = np.zeros(len(i), dtype=bool)
        if self.scoring.prefix_sharing:
            shared = self._whole(targets, i, demos, j)
        out = np.empty(len(i), dtype=np.float64)
        cut = np.flatnonzero(~shared)
        out[cut] = self._distances(
            lengths[cut], lambda k: self._sequence(targets, i[cut[k]], demos, j[cut[k]]), tick
        )
        whole = np.flatnonzero(shared)
        out[whole] = self._shared(targets, demos, i[whole], j[whole], tick)
        return out

    def _whole(self, t: EncodedSet, i: np.ndarray, d: EncodedSet, j: np.ndarray) -> np.ndarray:
        """Per pair, whether its sequence fits max_length uncut, so its prefix is demo j's alone."""
        full = (
            self.prompts.fixed(True) + _lens(t.query, i) + _lens(t.response, i) + _lens(d.demo, j)
        )
        return full <= self.prompts.max_length

    def _sequence(
        self, t: EncodedSet, i: int, d: EncodedSet | None = None, j: int = 0
    ) -> tuple[np.ndarray, int]:
        """Token ids of one sequence and how many of its last tokens are scored."""
        prefix, suffix = self.prompts.sequence(t, int(i), d, int(j))
        return np.concatenate([prefix, suffix]), len(t.response[int(i)]) + 1

    def _distances(
        self,
        lengths: np.ndarray,
        build: Callable[[int], tuple[np.ndarray, int]],
        tick: Callable[[int], None],
    ) -> np.ndarray:
        """Score sequence k = build(k) for every k, batched longest first; input order out."""
        out = np.empty(len(lengths), dtype=np.float64)
        order = np.argsort(-lengths, kind="stable")
        for rows in self._batches(lengths[order]):
            ks = order[rows]
            out[ks] = self._forward([build(int(k)) for k in ks])
            tick(len(ks))
        return out

    def _shared(
        self,
        t: EncodedSet,
        d: EncodedSet,
        i: np.ndarray,
        j: np.ndarray,
        tick: Callable[[int], None],
    ) -> np.ndarray:
        """d1 of uncut pairs: each demonstration's prefix runs once, its targets' suffixes after."""
        out = np.empty(len(i), dtype=np.float64)
        pieces = [self.prompts.sequence(t, int(a), d, int(b)) for a, b in zip(i, j, strict=True)]
        scored = [len(t.response[int(a)]) + 1 for a in i]
        _, first, group = np.unique(j, return_index=True, return_inverse=True)
        prefix_len = np.array([len(pieces[k][0]) for k in first], dtype=np.int64)
        suffix_len = np.array([len(s) for _, s in pieces], dtype=np.int64)
        by_prefix = np.argsort(-prefix_len, kind="stable")  # demonstrations, longest prefix first
        slot = np.empty_like(by_prefix)  # a demonstration's row in its chunk's cache
        for chunk in self._batches(prefix_len[by_prefix]):
            demos = by_prefix[chunk]
            slot[demos] = np.arange(len(demos))
            past = self._prefill([pieces[first[g]][0] for g in demos])
            ks = np.flatnonzero(np.isin(group, demos))
            ks = ks[np.argsort(-suffix_len[ks], kind="stable")]
            width = int(prefix_len[demos[0]])
            for rows in self._batches(width + suffix_len[ks]):
                batch = ks[rows]
                seqs = [(pieces[k][1], scored[k]) for k in batch]
                out[batch] = self._forward(seqs, past.select(slot[group[batch]], self.device))
                tick(len(batch))
        return out

    def _batches(self, lengths: np.ndarray) -> Iterator[slice]:
        """Slices of longest-first lengths into batches within max_batch_tokens/size."""
        start, cfg = 0, self.scoring
        while start < len(lengths):
            fits = cfg.max_batch_tokens // int(lengths[start])
            end = start + max(1, min(cfg.max_batch_size, fits, len(lengths) - start))
            yield slice(start, end)
            start = end

    def _pad(self, seqs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Right-padded int64 ids and attention mask of token sequences."""
        width = max(len(s) for s in seqs)
        ids = np.full((len(seqs), width), self.prompts.eos[0], dtype=np.int64)
        mask = np.zeros((len(seqs), width), dtype=np.int64)
        for b, s in enumerate(seqs):
            ids[b, : len(s)] = s
            mask[b, : len(s)] = 1
        return ids, mask

    @torch.inference_mode()
    def _prefill(self, prefixes: list[np.ndarray]) -> _Past:
        """The KV cache of right-padded prefixes, from one forward pass."""
        ids, mask = self._pad(prefixes)
        extra = {"logits_to_keep": 1} if self.keep_logits else {}
        out = self.model(
            input_ids=torch.as_tensor(ids, device=self.device),
            attention_mask=torch.as_tensor(mask, device=self.device),
            use_cache=True,
            **extra,
        )
        return _Past(getattr(out, self.cache_arg), mask, mask.sum(axis=1))

    @torch.inference_mode()
    def _forward(self, seqs: list[tuple[np.ndarray, int]], past: _Past | None = None) -> np.ndarray:
        """Distance of each (ids, n_scored) sequence from one right-padded pass, after `past`."""
        counts = np.array([n for _, n in seqs])
        ids, mask = self._pad([s for s, _ in seqs])
        width = ids.shape[1]
        # (row, position) of each logit that predicts a scored token: the last n_scored of a row
        row = np.repeat(np.arange(len(seqs)), counts)
        col = np.concatenate([np.arange(len(s) - n - 1, len(s) - 1) for s, n in seqs])
        first = int(col.min()) if self.keep_logits else 0
        extra: dict[str, Any] = {"logits_to_keep": width - first} if self.keep_logits else {}
        if past is not None:
            positions = np.where(mask == 1, past.length[:, None] + np.arange(width), 0)
            extra["position_ids"] = torch.as_tensor(positions, device=self.device)
            extra[self.cache_arg] = past.cache
            mask = np.concatenate([past.mask, mask], axis=1)
        logits = self.model(
            input_ids=torch.as_tensor(ids, device=self.device),
            attention_mask=torch.as_tensor(mask, device=self.device),
            use_cache=past is not None,
            **extra,
        ).logits
        at = (
            torch.as_tensor(row, device=self.device),
            torch.as_tensor(col - first, device=self.device),
        )
        gold = torch.as_tensor(ids[row, col + 1], device=self.device)
        logp = logits[at].float().log_softmax(-1).gather(1, gold[:, None])[:, 0]
        logp = logp.double().cpu().numpy()
        starts = np.cumsum(counts) - counts
        if self.scoring.distance == "cpmi":
            return -np.add.reduceat(logp, starts) / counts
        return np.sqrt(np.add.reduceat(np.expm1(logp) ** 2, starts) / counts)  # (1 - p)^2


def _ticker(progress: ProgressFn | None, total: int) -> Callable[[int], None]:
    """A callback that adds up finished sequences and reports (done, total) to `progress`."""
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    return tick


def _lens(pieces: list[np.ndarray], idx: np.ndarray) -> np.ndarray:
    """Token counts of pieces[k] for k in idx."""
    return np.array([len(pieces[k]) for k in idx], dtype=np.int64)
