"""The delift method's scoring stage, in order: pairs -> plan -> estimate -> score -> reduce.

Only what the block store lacks is scored; the kernels are then reduced from the store, so a
re-run scores nothing and a stopped run resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from dataclasses import dataclass, field
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
    d0_by_index,
    load_utility_model,
    missing,
    needed_utilities,
    pair_table,
    plan_pairs,
    plan_plain,
)
from delift_ray.scoring.knn import neighbours, uses_ann
from delift_ray.scoring.pairs import dense_pairs, neighbour_pairs, random_pairs, union_pairs
from delift_ray.scoring.store import BlockStore, scoring_key
from delift_ray.scoring.templates import EncodedSet, Prompts
from delift_ray.selection.kernels import demonstration_means, utility_kernel

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


@dataclass
class Plan:
    """The pairs each kernel needs, what the store already has of them, and what it lacks."""

    needed: dict[str, pa.Table]
    found: dict[str, pa.Table]  # needed pairs already stored, with (d0, d1, u)
    d0: np.ndarray  # stored d0 per pool row, NaN where missing
    todo_pairs: dict[str, pa.Table]
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def todo_plain(self) -> np.ndarray:
        """Pool rows whose d0 is not yet in the store."""
        return np.flatnonzero(np.isnan(self.d0))

    @property
    def pairs_to_score(self) -> int:
        """Pairs not yet in the store."""
        return sum(t.num_rows for t in self.todo_pairs.values())


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
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, Any]]:
    """(i, j) to score per kernel: every pair (dense) or each target's k nearest (knn), and per
    kernel how its neighbours were searched (method, recall@k; empty for dense)."""
    n = len(sets[POOL].ids)
    if pairs.mode == "dense":
        out = {POOL: dense_pairs(n, n)}
        if CROSS in sets:
            out[CROSS] = dense_pairs(n, len(sets[CROSS].ids))
        return out, {}
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
        out[name] = neighbour_pairs(nbrs, same)
    if pairs.random_k:  # a few random candidates per target sample each demo's global utility
        for name, found in out.items():
            extra = random_pairs(n, len(sets[name].ids), pairs.random_k, seed)
            out[name] = union_pairs(found, extra)
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


def plan(setup: Preparation, sets: dict[str, TextSet], pairs: dict[str, Any]) -> Plan:
    """Compare the needed pairs with the store: what is missing, and what was corrupt."""
    job = setup.job
    log.info("scoring path: %s", setup.sharing)
    plain_scan = BlockStore(job.store_uri, job.store_key, "plain").scan()
    pair_scan = BlockStore(job.store_uri, job.store_key, "pairs").scan()
    d0 = d0_by_index(plain_scan.table, sets[POOL].ids)
    needed = {
        name: pair_table(sets[POOL].ids, sets[name].ids, i, j) for name, (i, j) in pairs.items()
    }
    found = {name: needed_utilities(t, pair_scan.table) for name, t in needed.items()}
    todo = {name: missing(t, pair_scan.table) for name, t in needed.items()}
    stats = {
        "scoring_path": setup.sharing,
        "pairs_needed": sum(t.num_rows for t in needed.values()),
        "blocks_removed_corrupt": len(plain_scan.removed) + len(pair_scan.removed),
    }
    return Plan(needed, found, d0, todo, stats)


def estimate(
    setup: Preparation, sets: dict[str, TextSet], p: Plan, pool_enc: EncodedSet
) -> dict[str, Any]:
    """Pairs and tokens still to score (from token counts of the pool's encoding, no model)."""
    enc = {POOL: pool_enc}
    enc.update({n: setup.prompts.encode(s.xs, s.ys, s.chat) for n, s in sets.items() if n != POOL})
    tokens = int(setup.prompts.lengths(enc[POOL], p.todo_plain).sum())
    for name, t in p.todo_pairs.items():
        i, j = t["i"].to_numpy(), t["j"].to_numpy()
        tokens += int(setup.prompts.lengths(enc[POOL], i, enc[name], j).sum())
    return {
        "targets_to_score_d0": len(p.todo_plain),
        "pairs_to_score": p.pairs_to_score,
        "pairs_in_store": p.stats["pairs_needed"] - p.pairs_to_score,
        "tokens_to_score": tokens,
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
    setup: Preparation, sets: dict[str, TextSet], p: Plan, local_scorer: Any = None
) -> ScoreReport:
    """Score d0 for missing targets, then every missing pair; returns counters and blocks."""
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
        score_blocks(job, sets, plain_blocks, count("plain", bar), local_scorer)
    new_d0 = BlockStore(job.store_uri, job.store_key, "plain").read(written["plain"])
    d0 = np.where(np.isnan(p.d0), d0_by_index(new_d0, sets[POOL].ids), p.d0)
    if np.isnan(d0).any():
        raise DeliftError("store: some d0 blocks are missing after scoring; run again to resume")
    blocks = [
        b
        for name, t in p.todo_pairs.items()
        for b in plan_pairs(t, name, d0, job.scoring.demos_per_block)
    ]
    with ProgressBar("scoring pairs", p.pairs_to_score, unit="pairs") as bar:
        score_blocks(job, sets, blocks, count("pairs", bar), local_scorer)
    seconds = time.perf_counter() - start
    counters["pairs_per_second"] = round(counters["pairs_scored"] / seconds, 1) if seconds else None
    return ScoreReport(counters, written["pairs"])


def reduce(
    setup: Preparation,
    sets: dict[str, TextSet],
    p: Plan,
    scored: ScoreReport,
    selection: SelectionConfig,
    cross_label: str,
    transform: UtilityTransform | None = None,
    seed: int = 0,
) -> tuple[Any, Any, pa.Table, np.ndarray]:
    """Kernels from the needed pairs, scaled per selection's scaling, normalize and sharpen:
    (K, cross kernel or None, utilities, K's demonstration means m_j).

    The pairs come from the plan's scan of the store plus the blocks this run wrote (the store
    is not scanned again), in (i, j) order. `transform(u, seed, kernel number)`, if given,
    rewrites each kernel's utilities before scaling (delift-shuffled permutes them over their
    pairs, a control for what the utilities' placement is worth); the table keeps the true ones,
    the cross kernel's rows labelled `cross_label` (the stage).
    """
    new = BlockStore(setup.job.store_uri, setup.job.store_key, "pairs").read(scored.pair_blocks)
    n = len(sets[POOL].ids)
    kernels: dict[str, Any] = {}
    tables = []
    for name, needed in p.needed.items():
        got = pa.concat_tables([p.found[name], needed_utilities(p.todo_pairs[name], new)])
        got = got.sort_by([("i", "ascending"), ("j", "ascending")])
        if got.num_rows != needed.num_rows:
            raise DeliftError(
                f"store: {needed.num_rows - got.num_rows} needed pairs are missing; run again"
            )
        i, j = got["i"].to_numpy(), got["j"].to_numpy()
        shape = (n, len(sets[name].ids))
        u = got["u"].to_numpy()
        if transform is not None:
            u = transform(u, seed, len(kernels))
        kernels[name] = utility_kernel(
            i, j, u, shape, selection.scaling, selection.normalize, selection.sharpen
        )
        label = POOL if name == POOL else cross_label
        tables.append(
            got.select(["target_id", "demo_id", "d0", "d1", "u"]).add_column(
                0, "kernel", pa.array([label] * got.num_rows, pa.string())
            )
        )
    pool = kernels[POOL].tocoo()
    means = demonstration_means(pool.row, pool.col, pool.data, n)
    return kernels[POOL], kernels.get(CROSS), pa.concat_tables(tables), means


def load_local_model(setup: Preparation) -> Any:
    """The in-process scorer (local executor, calibration, self-embeddings)."""
    return load_utility_model(setup.job)
