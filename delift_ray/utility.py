"""Batched teacher-forced distances (SPEC §3): d0[i] (plain prompt) and d1[i, j] (with example j).

For the T scored tokens of target i (its response and a closing EOS), p_t is the model's
probability of the gold token. Distance "d" is sqrt(mean_t (1 - p_t)^2), in [0, 1]; distance
"cpmi" is mean_t -log p_t, so that U = d0 - d1 = mean_t (log p_with - log p_plain). Either way
U[i, j] = d0[i] - d1[i, j] > 0 means demonstration j helps target i.

Sequences are sorted longest first and packed into right-padded batches of at most
`max_batch_tokens` padded tokens and `max_batch_size` rows; one forward per batch, and only the
rows of the logits that predict scored tokens go through log_softmax.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator

import numpy as np
import torch

from delift_ray.config import ScoringConfig, TemplatesConfig
from delift_ray.templates import EncodedSet, Prompts

ProgressFn = Callable[[int, int], None]  # (sequences done, total)


class UtilityScorer:
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
        # models that accept it project only the last positions onto the vocabulary
        self.keep_logits = "logits_to_keep" in inspect.signature(model.forward).parameters

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
        return self._distances(lengths, lambda k: self._sequence(targets, idx[k]), progress)

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
        return self._distances(
            lengths, lambda k: self._sequence(targets, i[k], demos, j[k]), progress
        )

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
        progress: ProgressFn | None,
    ) -> np.ndarray:
        """Score sequence k = build(k) for every k, batched longest first; input order out."""
        out = np.empty(len(lengths), dtype=np.float64)
        order = np.argsort(-lengths, kind="stable")
        for done, rows in self._batches(lengths[order]):
            ks = order[rows]
            out[ks] = self._forward([build(int(k)) for k in ks])
            if progress is not None:
                progress(done, len(lengths))
        return out

    def _batches(self, lengths: np.ndarray) -> Iterator[tuple[int, slice]]:
        """(rows done after it, slice) of each batch of longest-first lengths, within the limits."""
        start, cfg = 0, self.scoring
        while start < len(lengths):
            fits = cfg.max_batch_tokens // int(lengths[start])
            end = start + max(1, min(cfg.max_batch_size, fits, len(lengths) - start))
            yield end, slice(start, end)
            start = end

    @torch.inference_mode()
    def _forward(self, seqs: list[tuple[np.ndarray, int]]) -> np.ndarray:
        """Distance of each (ids, n_scored) sequence, from one right-padded forward pass."""
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
        extra = {"logits_to_keep": width - first} if self.keep_logits else {}
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
        logp = logits[at].float().log_softmax(-1).gather(1, gold[:, None])[:, 0]
        logp = logp.double().cpu().numpy()
        starts = np.cumsum(counts) - counts
        if self.scoring.distance == "cpmi":
            return -np.add.reduceat(logp, starts) / counts
        return np.sqrt(np.add.reduceat(np.expm1(logp) ** 2, starts) / counts)  # (1 - p)^2
