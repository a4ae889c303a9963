"""Evaluate a model on a held-out test set: greedy generations on Ray Data actors (or
in-process), then metrics.

The test set must share no example id (content hash of the rendered x, y) with the pool, target
or existing set. Each actor loads the model once; per batch it generates greedily from
``[BOS] x EOS`` (left-padded, stopping at EOS or max_new_tokens) and computes the teacher-forced
NLL of the reference in the training layout ``[BOS] x EOS y EOS``. A chat row its model's chat
template rendered is generated from x as the model is served (the prompt scoring uses, nothing
added), stopping at EOS or at the template's end-of-turn token; its loss is that of y after x and
its reference is the assistant's reply. Per row: exact match (normalised), ROUGE-1 and ROUGE-L
F, embedding cosine of prediction and reference, response loss.
"""

from __future__ import annotations

import dataclasses
import re
import string
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from delift_ray import storage
from delift_ray.config import Config, EmbedderConfig, EvalConfig, ModelConfig, config_to_dict
from delift_ray.data.examples import ChatParts, ExampleSet
from delift_ray.data.read import read_examples
from delift_ray.distributed.maps import actor_map
from delift_ray.distributed.session import run_scope
from delift_ray.errors import ConfigError, DeliftError
from delift_ray.extras import optional_import
from delift_ray.files import prepare_output_dir, write_json, write_parquet
from delift_ray.finetune.driver import output_model_path
from delift_ray.finetune.layout import (
    Layout,
    collate,
    encode_pairs,
    response_nll,
    served_prompt,
    tokenize,
    tokenize_rows,
)
from delift_ray.models.embed import embed_texts
from delift_ray.models.load import (
    fingerprint,
    load_chat_template,
    load_model,
    load_tokenizer,
    max_length,
    model_config,
)
from delift_ray.versions import package_versions

_SPACES = re.compile(r"\s+")
_EDGES = string.punctuation + " "


# ---------------------------------------------------------------------------------------------
# metrics (plain functions)


def normalize_answer(text: str) -> str:
    """Lowercase, collapse whitespace, strip whitespace and punctuation at both ends."""
    return _SPACES.sub(" ", text.lower()).strip(_EDGES)


def exact_match(prediction: str, reference: str) -> bool:
    """Whether prediction and reference are equal after normalize_answer."""
    return normalize_answer(prediction) == normalize_answer(reference)


def rouge_f(predictions: Sequence[str], references: Sequence[str]) -> dict[str, list[float]]:
    """Per-row ROUGE-1 and ROUGE-L F-measures (rouge-score, Porter stemmer)."""
    rouge_scorer = optional_import("rouge_score.rouge_scorer", "train", "evaluation's ROUGE")
    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    scores = [scorer.score(r, p) for p, r in zip(predictions, references, strict=True)]
    return {k: [s[k].fmeasure for s in scores] for k in ("rouge1", "rougeL")}


def embedding_cosine(
    predictions: Sequence[str], references: Sequence[str], cfg: EmbedderConfig
) -> np.ndarray:
    """Per-row cosine similarity of prediction and reference sentence embeddings."""
    n = len(predictions)
    if n == 0:
        return np.zeros(0, np.float32)
    emb = embed_texts([t.strip() for t in [*predictions, *references]], cfg)
    return np.einsum("ij,ij->i", emb[:n], emb[n:])


def check_disjoint(test: ExampleSet, others: dict[str, ExampleSet]) -> None:
    """DeliftError naming the count and an example if any test id is in one of `others`."""
    for name, other in others.items():
        seen = set(other.ids)
        overlap = [i for i in test.ids if i in seen]
        if overlap:
            raise DeliftError(
                f"eval: {len(overlap)} test rows also appear in the {name} set (e.g. id "
                f"{overlap[0]}); the test set must be held out"
            )


# ---------------------------------------------------------------------------------------------
# generation and reference loss (one actor, or in-process)


class Generator:
    """Greedy predictions and reference losses for a numpy batch of (id, x, y) rows (built once
    per actor, or in-process)."""

    def __init__(
        self, model: ModelConfig, add_bos: str, max_new_tokens: int, threads: int | None = None
    ) -> None:
        import torch

        if threads is not None:
            torch.set_num_threads(threads)
        lm = load_model(model)
        self.model, self.tokenizer, self.limit = lm.model, lm.tokenizer, lm.max_length
        self.layout = Layout.of(lm.tokenizer, add_bos)
        self.max_new_tokens = max_new_tokens

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Predictions, per-row mean reference NLL (NaN if too long) and reference tokens."""
        xs, ys = [str(x) for x in batch["x"]], [str(y) for y in batch["y"]]
        chat = [
            ChatParts(int(at), str(q), "") if int(at) >= 0 else None
            for at, q in zip(batch["query_at"], batch["query"], strict=True)
        ]
        loss, tokens = self.losses(xs, ys, chat)
        return {
            "id": batch["id"],
            "prediction": np.array(self.generate(xs, chat, ys), dtype=object),
            "loss": loss,
            "response_tokens": tokens,
        }

    def generate(
        self,
        xs: Sequence[str],
        chat: Sequence[ChatParts | None] | None = None,
        ys: Sequence[str] = (),
    ) -> list[str]:
        """Greedy continuations of [BOS] x EOS (x for rows with chat parts), left-padded, cut at
        the first EOS or, for chat rows, at a special token their reference y holds (the end of
        their turn)."""
        import torch

        parts = list(chat) if chat is not None else [None] * len(xs)
        prompts = self.prompts(xs, parts)
        served = [c is not None for c in parts]
        stops = sorted({self.layout.eos, *self._turn_ends(ys, served)})
        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, p in enumerate(prompts):
            ids[row, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[row, width - len(p) :] = 1
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                num_beams=1,
                eos_token_id=stops,
                pad_token_id=pad,
            )
        new = out[:, width:].tolist()
        return [self.tokenizer.decode(_until(t, stops), skip_special_tokens=True) for t in new]

    def prompts(self, xs: Sequence[str], chat: Sequence[ChatParts | None]) -> list[list[int]]:
        """The token ids generation starts from, leaving room for max_new_tokens: [BOS] x EOS
        cut from x's left, or a chat row's x as scoring cuts it (its last tokens if even its
        template's text does not fit)."""
        room = self.limit - self.max_new_tokens
        x_ids = tokenize_rows(self.tokenizer, xs, [c is not None for c in chat])
        out = []
        for x, ids, c in zip(xs, x_ids, chat, strict=True):
            if c is None:
                out.append(self.layout.prompt(ids, room))
            else:
                out.append(served_prompt(self.tokenizer, x, ids, c, room) or ids[-room:])
        return out

    def _turn_ends(self, ys: Sequence[str], served: Sequence[bool]) -> set[int]:
        """The special tokens served rows' references hold: where the template ends a turn."""
        texts = [y for y, s in zip(ys, served, strict=False) if s]
        special = set(self.tokenizer.all_special_ids)
        return {t for ids in tokenize(self.tokenizer, texts, served=True) for t in ids} & special

    def losses(
        self, xs: Sequence[str], ys: Sequence[str], chat: Sequence[ChatParts | None] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-row mean NLL of each reference given its prompt, and its scored token count."""
        import torch

        pairs = encode_pairs(self.tokenizer, self.layout, xs, ys, self.limit, chat)
        loss = np.full(len(pairs), np.nan)
        tokens = np.zeros(len(pairs), np.int64)
        fit = [k for k, p in enumerate(pairs) if p is not None]
        if fit:
            batch = collate([p for p in pairs if p is not None], self.tokenizer.pad_token_id)
            device = next(self.model.parameters()).device
            with torch.inference_mode():
                nll, n = response_nll(self.model, {k: v.to(device) for k, v in batch.items()})
            loss[fit] = (nll / n.clamp(min=1)).cpu().numpy()
            tokens[fit] = n.cpu().numpy()
        return loss, tokens


def references(test: ExampleSet) -> list[str]:
    """What predictions are compared with: y, or a chat-template row's reply (without the
    template's end-of-turn text)."""
    return [e.chat.reply if e.chat is not None else e.y for e in test.examples]


def _until(tokens: list[int], stops: list[int]) -> list[int]:
    ends = [tokens.index(s) for s in stops if s in tokens]
    return tokens[: min(ends)] if ends else tokens


# ---------------------------------------------------------------------------------------------
# the run


@dataclass
class EvalResult:
    """Where the per-row outputs and the summary went, and the summary's contents."""

    rows_path: str
    summary_path: str
    summary: dict[str, Any]


def model_path(cfg: Config) -> str:
    """The model to evaluate: eval.model_path, else the trained model."""
    return cfg.eval.model_path or output_model_path(cfg.train, cfg.output_dir)


@run_scope()
def run_eval(cfg: Config) -> EvalResult:
    """Check the test set is held out, generate and score it; write eval_rows.parquet, eval.json."""
    started = time.perf_counter()
    if cfg.eval.test is None:
        raise ConfigError("config: eval needs eval.test.path (the held-out test set)")
    out = prepare_output_dir(cfg.output_dir)
    model = dataclasses.replace(cfg.model, path=model_path(cfg))
    others = {"pool": cfg.data, "target": cfg.target, "existing": cfg.existing}
    chat = load_chat_template(model, [cfg.eval.test, *others.values()])
    test = read_examples(cfg.eval.test, chat)
    check_disjoint(test, {k: read_examples(d, chat) for k, d in others.items() if d is not None})
    if not test.examples:
        raise DeliftError(f"eval: the test set {cfg.eval.test.path} has no usable rows")
    limit = max_length(model, model_config(model), load_tokenizer(model))
    if limit - cfg.eval.max_new_tokens < 3:
        raise DeliftError(
            f"eval: max_new_tokens {cfg.eval.max_new_tokens} leaves no room for a prompt in the "
            f"model's {limit} tokens"
        )
    gen_start = time.perf_counter()
    generated = _generate(cfg.eval, cfg.templates.add_bos, model, test)
    gen_s = time.perf_counter() - gen_start
    table = _score(cfg.eval, cfg.embedder, test, generated)
    rows_path = write_parquet(table, storage.join(out, "eval_rows.parquet"))
    summary = {
        "rows": len(test.examples),
        "metrics": _summarize(table),
        "test": cfg.eval.test.path,
        "held_out_from": [k for k, d in others.items() if d is not None],
        "model_path": model.path,
        "rendering": test.rendering,
        "model_fingerprint": fingerprint(model),
        "executor": cfg.eval.executor,
        "generate_s": round(gen_s, 3),
        "wall_s": round(time.perf_counter() - started, 3),
        "versions": package_versions(),
        "config": config_to_dict(cfg),
    }
    summary_path = write_json(summary, storage.join(out, "eval.json"))
    return EvalResult(rows_path=rows_path, summary_path=summary_path, summary=summary)


def _generate(
    e: EvalConfig, add_bos: str, model: ModelConfig, test: ExampleSet
) -> dict[str, dict[str, Any]]:
    """Generator outputs per test id, from an actor pool or in-process."""
    rows = [
        {
            "id": e.id,
            "x": e.x,
            "y": e.y,
            "query_at": e.chat.query_at if e.chat is not None else -1,
            "query": e.chat.query if e.chat is not None else "",
        }
        for e in test.examples
    ]
    if e.executor == "local":
        gen = Generator(model, add_bos, e.max_new_tokens)
        records = []
        for start in range(0, len(rows), e.batch_size):
            chunk = rows[start : start + e.batch_size]
            out = gen({k: np.array([r[k] for r in chunk], dtype=object) for k in chunk[0]})
            records += [dict(zip(out, values, strict=True)) for values in zip(*out.values())]
    else:
        records = _generate_on_ray(e, add_bos, model, rows)
    return {str(r["id"]): r for r in records}


def _generate_on_ray(
    e: EvalConfig, add_bos: str, model: ModelConfig, rows: list[dict[str, Any]]
) -> list[dict]:
    kwargs = {
        "model": model,
        "add_bos": add_bos,
        "max_new_tokens": e.max_new_tokens,
        "threads": max(1, int(e.cpus_per_actor)),
    }
    what = "an evaluation actor"
    return list(actor_map(Generator, kwargs, rows, e, what, "eval", batch_size=e.batch_size))


def _score(
    e: EvalConfig, embedder: EmbedderConfig, test: ExampleSet, generated: dict[str, dict[str, Any]]
) -> pa.Table:
    """Per-row table: id, prediction, reference, metrics, reference loss and token count."""
    ids, refs = test.ids, references(test)
    preds = [str(generated[i]["prediction"]) for i in ids]
    cols: dict[str, Any] = {"id": ids, "prediction": preds, "reference": refs}
    if e.exact_match:
        cols["exact_match"] = [exact_match(p, r) for p, r in zip(preds, refs, strict=True)]
    cols.update(rouge_f(preds, refs))
    cols["cosine"] = embedding_cosine(preds, refs, embedder).astype(np.float64)
    cols["loss"] = np.array([generated[i]["loss"] for i in ids], dtype=np.float64)
    cols["response_tokens"] = np.array([generated[i]["response_tokens"] for i in ids], np.int64)
    return pa.table(cols)


def _summarize(table: pa.Table) -> dict[str, float | int | None]:
    """Means over rows; loss over the rows that fit; perplexity from the token-weighted loss."""
    out: dict[str, float | int | None] = {}
    for name in ("exact_match", "rouge1", "rougeL", "cosine"):
        if name in table.column_names:
            out[name] = float(np.mean(table[name].to_numpy(zero_copy_only=False)))
    loss = table["loss"].to_numpy()
    tokens = table["response_tokens"].to_numpy()
    fit = ~np.isnan(loss)
    out["response_loss"] = float(loss[fit].mean()) if fit.any() else None
    out["perplexity"] = (
        float(np.exp((loss[fit] * tokens[fit]).sum() / tokens[fit].sum())) if fit.any() else None
    )
    out["loss_rows"] = int(fit.sum())
    return out
