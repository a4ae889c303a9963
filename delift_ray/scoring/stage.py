"""The delift method's scoring stage, in order: pairs -> plan -> estimate -> score -> reduce.

Only what the block store lacks is scored; the kernels are then reduced from the store, so a
re-run scores nothing and a stopped run resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
import uuid
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from delift_ray.config import (
    EmbedderConfig,
    ModelConfig,
    PairsConfig,
    ScoringConfig,
    SelectionConfig,
    TemplatesConfig,
)
from delift_ray.data.examples import ExampleSet, Reject, embedding_texts
from delift_ray.distributed.maps import task_map
from delift_ray.distributed.scoring import score_blocks
from delift_ray.errors import ConfigError, DeliftError
from delift_ray.logs import PREFIX
from delift_ray.map_fn import local_map
from delift_ray.models.embed import embed_texts, model_embeddings
from delift_ray.models.load import fingerprint, load_tokenizer, max_length, model_config
from delift_ray.progress import ProgressBar
from delift_ray.scoring.ann import load_faiss
from delift_ray.scoring.attention import sharing_refusal
from delift_ray.scoring.blocks import (
    POOL,
    TextSet,
    WorkerSpec,
    WorkItems,
    d0_by_index,
    load_utility_model,
    plan_plain,
)
from delift_ray.scoring.knn import neighbours, uses_ann
from delift_ray.scoring.store import BlockStore, scoring_key
from delift_ray.scoring.stream import (
    PairSource,
    StreamPlan,
    reduce_kernel,
    route_new,
    scaled_kernel,
    stream_plan,
)
from delift_ray.scoring.templates import EncodedSet, Prompts
from delift_ray.selection.kernels import demonstration_means

if TYPE_CHECKING:
    from delift_ray.selection.methods import UtilityTransform

log = logging.getLogger(__name__)

CROSS = "cross"


@dataclass
class Preparation:
    """What scoring needs before any model weights are loaded."""

    job: WorkerSpec
    prompts: Prompts
    fingerprint: str
    sharing: str  # how pairs are scored: "shared prefixes", or why not


def prepare(
    model: ModelConfig, templates: TemplatesConfig, scoring: ScoringConfig, store_uri: str
) -> Preparation:
    """Tokenizer, context limit, model fingerprint and the store key; no weights loaded."""
    tokenizer = load_tokenizer(model)
    config = model_config(model)
    limit = max_length(model, config, tokenizer)
    fp = fingerprint(model)
    key = scoring_key(
        model=fp,
        templates=dataclasses.asdict(templates),
        distance=scoring.distance,
        max_length=limit,
        tokens="whole-text prompts",  # utilities from piecewise tokens (before 0.2) differ
    )
    job = WorkerSpec(model, templates, scoring, limit, store_uri, key)
    prompts = Prompts(tokenizer, templates, limit)
    return Preparation(job, prompts, fp, sharing_mode(config, scoring))


def sharing_mode(config: Any, scoring: ScoringConfig) -> str:
    """How the workers will score pairs: with shared prefixes, or unshared and why."""
    if not scoring.prefix_sharing:
        return "unshared: scoring.prefix_sharing is off"
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    try:
        model_class = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    except KeyError:
        return "decided by each worker (a model class transformers does not list)"
    refusal = sharing_refusal(config, model_class)
    return "shared prefixes" if refusal is None else f"unshared: {refusal}"


def drop_unscorable(prompts: Prompts, pool: ExampleSet) -> tuple[ExampleSet, EncodedSet]:
    """Move pool rows whose response cannot fit the model's context into the rejects; returns
    the pool kept and its encoding (so that the pool is tokenized once on the driver)."""
    enc = prompts.encode(pool.xs, pool.ys, pool.chats)
    reasons = prompts.too_long(enc)
    if not any(reasons):
        return pool, enc
    keep = [k for k, r in enumerate(reasons) if r is None]
    rejects = [Reject(e.source, e.row, r) for e, r in zip(pool.examples, reasons) if r is not None]
    kept = dataclasses.replace(
        pool, examples=[pool.examples[k] for k in keep], rejects=pool.rejects + rejects
    )
    return kept, enc.take(keep)


def text_sets(pool: ExampleSet, cross: ExampleSet | None) -> dict[str, TextSet]:
    """The texts scorers need: the pool (targets and demonstrations) and the cross set."""
    sets = {POOL: TextSet(pool.ids, pool.xs, pool.ys, pool.chats)}
    if cross is not None:
        sets[CROSS] = TextSet(cross.ids, cross.xs, cross.ys, cross.chats)
    return sets


def choose_pairs(
    pairs: PairsConfig,
    embedder: EmbedderConfig,
    scoring: ScoringConfig,
    seed: int,
    sets: dict[str, TextSet],
    local_scorer: Any = None,
) -> tuple[dict[str, PairSource], dict[str, Any]]:
    """Where each kernel's pairs come from: every pair (dense) or each target's k nearest (knn,
    plus itself in the pool kernel and `random_k` random ones), and per kernel how its
    neighbours were searched (method, recall@k; empty for dense). No pair is formed here."""
    n = len(sets[POOL].ids)
    if pairs.mode == "dense":
        return {name: PairSource(n, len(s.ids)) for name, s in sets.items()}, {}
    if any(uses_ann(pairs, len(s.ids)) for s in sets.values()):
        load_faiss()  # a missing extra stops the run before any embedding
    emb = {name: embed(pairs, embedder, s, local_scorer) for name, s in sets.items()}
    # large pools: each block of targets searched in a Ray task of half a CPU
    map_fn = partial(task_map, cpus=0.5) if search_on_ray(pairs, scoring, n) else local_map
    out, searches = {}, {}
    for name in sets:
        k = pairs.k if name == POOL else min(pairs.k, len(sets[name].ids))
        same = name == POOL
        nbrs, searches[name] = neighbours(emb[POOL], emb[name], k, same, pairs, seed, map_fn)
        out[name] = PairSource(n, len(sets[name].ids), nbrs, same, pairs.random_k, seed)
    return out, searches


def search_on_ray(pairs: PairsConfig, scoring: ScoringConfig, n: int) -> bool:
    """Whether the kNN search runs on Ray Data (large pools with the ray executor)."""
    return pairs.mode == "knn" and scoring.executor == "ray" and n >= pairs.search_on_ray_from_rows


def embed(
    pairs: PairsConfig, embedder: EmbedderConfig, s: TextSet, local_scorer: Any = None
) -> np.ndarray:
    """Embeddings of x + y for kNN search: a sentence-embedding model, or the scorer's own."""
    texts = embedding_texts(s.xs, s.ys, s.chat)
    if pairs.embedder == "sentence":
        return embed_texts(texts, embedder)
    if local_scorer is None:
        raise ConfigError("config: pairs.embedder=self needs the model on the driver")
    return model_embeddings(local_scorer.model, local_scorer.prompts.tokenizer, texts)


def plan(
    setup: Preparation,
    sets: dict[str, TextSet],
    sources: dict[str, PairSource],
    pool_enc: EncodedSet | None = None,
    write: bool = True,
) -> StreamPlan:
    """Compare the needed pairs with the store, a bucket of demonstrations at a time: what is
    missing becomes work items beside the store (the store listed once; corrupt blocks
    removed; a dry run, `write` False, writes none). With the pool's encoding, the tokens of
    the missing pairs are counted too."""
    job = setup.job
    log.info("scoring path: %s", setup.sharing)
    count = None
    if pool_enc is not None:
        enc = {POOL: pool_enc}
        enc.update(
            {n: setup.prompts.encode(s.xs, s.ys, s.chat) for n, s in sets.items() if n != POOL}
        )

        def count(name: str, i: np.ndarray, j: np.ndarray) -> int:
            return int(setup.prompts.lengths(enc[POOL], i, enc[name], j).sum())

    p = stream_plan(
        sources,
        {name: s.ids for name, s in sets.items()},
        BlockStore(job.store_uri, job.store_key, "pairs"),
        BlockStore(job.store_uri, job.store_key, "plain"),
        BlockStore(job.store_uri, job.store_key, f"work/{uuid.uuid4().hex[:12]}"),
        job.scoring.demos_per_block,
        count,
        write=write,
    )
    p.stats["scoring_path"] = setup.sharing
    if pool_enc is not None:
        p.tokens += int(setup.prompts.lengths(pool_enc, p.todo_plain).sum())
    return p


def estimate(p: StreamPlan) -> dict[str, Any]:
    """Pairs and tokens still to score (tokens counted by the plan from the pool's encoding)."""
    return {
        "targets_to_score_d0": len(p.todo_plain),
        "pairs_to_score": p.pairs_to_score,
        "pairs_in_store": int(p.stats["pairs_needed"]) - p.pairs_to_score,  # type: ignore[call-overload]
        "tokens_to_score": p.tokens,
    }


def calibrate(scorer: Any, sets: dict[str, TextSet], n_pairs: int, seed: int) -> float:
    """Tokens per second of one scorer on a random sample of pool pairs (nothing stored)."""
    pool = sets[POOL]
    rng = np.random.default_rng(seed)
    sample = rng.choice(len(pool.ids), size=min(len(pool.ids), 2 * n_pairs), replace=False)
    chat = [pool.chat[k] for k in sample] if pool.chat is not None else None
    enc = scorer.encode([pool.xs[k] for k in sample], [pool.ys[k] for k in sample], chat)
    i = rng.integers(0, len(enc), n_pairs)  # only the sampled rows are tokenized
    j = rng.integers(0, len(enc), n_pairs)
    start = time.perf_counter()
    scorer.pairs(enc, enc, i, j)
    seconds = max(time.perf_counter() - start, 1e-9)
    return float(scorer.prompts.lengths(enc, i, enc, j).sum() / seconds)


def print_estimate(
    est: dict[str, Any], tokens_per_s: float | None, workers: int, dry_run: bool = False
) -> None:
    """The cost estimate: logged before scoring; a dry run's result, so printed (on stderr, where
    it always was) whatever the log level."""
    line = (
        f"plan: {est['pairs_to_score']:,} pairs and {est['targets_to_score_d0']:,} "
        f"plain targets to score ({est['pairs_in_store']:,} pairs already in the store), "
        f"{est['tokens_to_score']:,} tokens"
    )
    if tokens_per_s:
        seconds = est["tokens_to_score"] / tokens_per_s / max(workers, 1)
        line += f"; about {seconds:,.0f} s at {tokens_per_s:,.0f} tokens/s per worker x {workers}"
    if dry_run:
        print(PREFIX + line, file=sys.stderr, flush=True)
    else:
        log.info("%s", line)


@dataclass
class ScoreReport:
    """What `execute` did: counters for the manifest and the pair blocks it wrote."""

    counters: dict[str, Any]
    pair_blocks: list[str]


def execute(
    setup: Preparation,
    sets: dict[str, TextSet],
    p: StreamPlan,
    local_scorer: Any = None,
    encoded: dict[str, EncodedSet] | None = None,
) -> ScoreReport:
    """Score d0 for missing targets, then every work item of the plan; returns counters and
    blocks. `encoded` (the pool's encoding) spares the in-process scorer a second tokenization."""
    job = setup.job
    counters: dict[str, Any] = {
        "pairs_scored": 0,
        "targets_scored_d0": 0,
        "tokens_scored": 0,
        "blocks": 0,
        "blocks_per_node": {},  # Ray node id -> blocks its actors scored (none in-process)
    }
    written: dict[str, list[str]] = {"plain": [], "pairs": []}
    start = time.perf_counter()

    def count(kind: str, bar: ProgressBar):
        def on_block(summary: dict[str, Any]) -> None:
            key = "pairs_scored" if kind == "pairs" else "targets_scored_d0"
            counters[key] += int(summary["rows"])
            counters["tokens_scored"] += int(summary["tokens"])
            counters["blocks"] += 1
            if "node" in summary:
                per_node = counters["blocks_per_node"]
                per_node[summary["node"]] = per_node.get(summary["node"], 0) + 1
            written[kind].append(str(summary["block"]))
            bar.update_to(counters[key])

        return on_block

    plain_blocks = plan_plain(p.todo_plain, job.scoring.targets_per_plain_block)
    for kind, todo in (("plain", len(p.todo_plain)), ("pairs", p.pairs_to_score)):
        if todo:
            BlockStore(job.store_uri, job.store_key, kind).check_writable()
    with ProgressBar("scoring d0", len(p.todo_plain), unit="targets") as bar:
        score_blocks(job, sets, plain_blocks, count("plain", bar), local_scorer, encoded)
    new_d0 = BlockStore(job.store_uri, job.store_key, "plain").read(written["plain"])
    d0 = np.where(np.isnan(p.d0), d0_by_index(new_d0, sets[POOL].ids), p.d0)
    if np.isnan(d0).any():
        raise DeliftError("store: some d0 blocks are missing after scoring; run again to resume")
    items = WorkItems(p.work, list(p.work_files), p.blocks, d0)
    with ProgressBar("scoring pairs", p.pairs_to_score, unit="pairs") as bar:
        score_blocks(job, sets, items, count("pairs", bar), local_scorer, encoded)
    seconds = time.perf_counter() - start
    counters["pairs_per_second"] = round(counters["pairs_scored"] / seconds, 1) if seconds else None
    return ScoreReport(counters, written["pairs"])


def reduce(
    setup: Preparation,
    sets: dict[str, TextSet],
    p: StreamPlan,
    scored: ScoreReport,
    selection: SelectionConfig,
    cross_label: str,
    transform: UtilityTransform | None = None,
    seed: int = 0,
    keep_table: bool = True,
) -> tuple[Any, Any, pa.Table | None, np.ndarray]:
    """Kernels from the needed pairs, per selection's scaling, normalize and sharpen: (K, cross
    kernel or None, utilities or None without `keep_table`, K's demonstration means m_j); the
    kernels are CSC float64 (rows = targets).

    The pairs come from the plan's read of the store plus the blocks this run wrote (the store
    is not listed again), a bucket of demonstrations at a time. `transform(u, seed, kernel
    number)`, if given, rewrites each kernel's utilities, in (i, j) order, before scaling
    (delift-shuffled permutes them over their pairs, a control for what the utilities'
    placement is worth); the table keeps the true ones in (i, j) order, the cross kernel's rows
    labelled `cross_label` (the stage). The plan's spill files and work items are removed.
    """
    store = BlockStore(setup.job.store_uri, setup.job.store_key, "pairs")
    try:
        route_new(p, store, scored.pair_blocks, {name: s.ids for name, s in sets.items()})
        kernels: dict[str, Any] = {}
        tables = []
        for name in p.kernels:
            red = reduce_kernel(p, name, keep_table)
            order = red.ij_order() if keep_table or transform is not None else None
            raw = red.u
            if transform is not None:
                assert order is not None
                red.u = np.empty_like(raw)
                red.u[order] = transform(raw[order], seed, len(kernels))
            kernels[name] = scaled_kernel(red, selection)
            if keep_table:
                assert order is not None and red.d0 is not None and red.d1 is not None
                tables.append(
                    _utility_table(
                        POOL if name == POOL else cross_label,
                        np.asarray(sets[POOL].ids, object)[red.rows[order]],
                        np.asarray(sets[name].ids, object)[
                            np.repeat(np.arange(red.shape[1]), np.diff(red.indptr))[order]
                        ],
                        red.d0[order],
                        red.d1[order],
                        raw[order],
                    )
                )
    finally:
        p.close()
    pool = kernels[POOL]
    cols = np.repeat(np.arange(pool.shape[1]), np.diff(pool.indptr))
    means = demonstration_means(pool.indices, cols, pool.data, pool.shape[1])
    table = pa.concat_tables(tables) if keep_table else None
    return pool, kernels.get(CROSS), table, means


def _utility_table(
    label: str,
    targets: np.ndarray,
    demos: np.ndarray,
    d0: np.ndarray,
    d1: np.ndarray,
    u: np.ndarray,
) -> pa.Table:
    """One kernel's rows of the utilities table."""
    return pa.table(
        {
            "kernel": pa.array([label] * len(u), pa.string()),
            "target_id": pa.array(targets, pa.string()),
            "demo_id": pa.array(demos, pa.string()),
            "d0": pa.array(d0, pa.float64()),
            "d1": pa.array(d1, pa.float64()),
            "u": pa.array(u, pa.float64()),
        }
    )


def load_local_model(setup: Preparation) -> Any:
    """The in-process scorer (local executor, calibration, self-embeddings)."""
    return load_utility_model(setup.job)
