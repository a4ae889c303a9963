"""One selection run, stage by stage, in the order it happens.

read -> kernels, as the method gets them (scored utilities: tokenizer + pairs -> plan ->
estimate -> score on Ray -> reduce | sentence embeddings: embed | none) -> the method's order
(greedy on the stage's objective, or a draw) -> outputs + manifest
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from delift_ray.config import Config, resolve_budget, store_uri
from delift_ray.data.examples import ExampleSet
from delift_ray.data.read import read_examples
from delift_ray.distributed.maps import task_map
from delift_ray.distributed.session import run_scope
from delift_ray.files import prepare_output_dir
from delift_ray.models.load import load_chat_template
from delift_ray.scoring import stage as st
from delift_ray.scoring.templates import EncodedSet
from delift_ray.selection.methods import (
    METHODS,
    Kernels,
    OrderRequest,
    ScoredUtilities,
    SentenceEmbeddings,
    UtilityTransform,
)
from delift_ray.selection.stages import STAGES
from delift_ray.workflows.outputs import (
    RunOutputs,
    write_outputs,
    write_rejects,
)


@dataclass
class PhaseTimer:
    """Wall time per named phase, in seconds."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        """Time the enclosed block as `phase`."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = round(time.perf_counter() - start, 3)


def read_sets(cfg: Config) -> dict[str, ExampleSet]:
    """Read the pool and, if the stage needs one, the target or existing set (chat rows through
    the model's chat template when it has one)."""
    name = STAGES[cfg.stage].cross
    data = {"pool": cfg.data}
    if name is not None and getattr(cfg, name) is not None:
        data[name] = getattr(cfg, name)
    chat = load_chat_template(cfg.model, data.values())
    return {key: read_examples(d, chat) for key, d in data.items()}


@run_scope()
def run_select(
    cfg: Config,
    dry_run: bool = False,
    sets: dict[str, ExampleSet] | None = None,
    extra_manifest: dict[str, Any] | None = None,
) -> RunOutputs | None:
    """Run one selection per config and write its outputs (None for a dry run).

    `sets` replaces reading cfg.data / target / existing (a refresh passes the new rows and the
    previous selection); `extra_manifest` adds fields to the manifest.
    """
    timer = PhaseTimer()
    method, stage = METHODS[cfg.method], STAGES[cfg.stage]
    # the variant this run uses (a preset applied), so the manifest's config says which it is
    cfg = dataclasses.replace(cfg, selection=cfg.selection.resolved(method.preset))
    if not dry_run:
        prepare_output_dir(cfg.output_dir)
    with timer("read"):
        sets = dict(sets) if sets is not None else read_sets(cfg)
    pool, cross = sets["pool"], stage.cross_set(sets)
    if not pool.examples and not dry_run:
        write_rejects(cfg.output_dir, sets)  # so the error's pointer to rejects.parquet holds
    resolve_budget(cfg.budget, len(pool.examples))  # fail before any expensive work
    kernels: Kernels | None = None
    fingerprint = None
    if isinstance(method.kernels, ScoredUtilities):
        with timer("prepare"):
            setup = st.prepare(cfg.model, cfg.templates, cfg.scoring, store_uri(cfg))
            fingerprint = setup.fingerprint
            pool, pool_enc = st.drop_unscorable(setup.prompts, pool)
            sets["pool"] = pool
        budget = resolve_budget(cfg.budget, len(pool.examples))
        transform = method.kernels.transform
        kernels = score_delift(cfg, setup, pool, pool_enc, cross, timer, dry_run, transform)
        if kernels is None:
            return None
    else:
        budget = resolve_budget(cfg.budget, len(pool.examples))
        if dry_run:
            print(
                f"[delift-ray] plan: method {cfg.method}, select {budget} of {len(pool.examples)}"
            )
            return None
        if isinstance(method.kernels, SentenceEmbeddings):
            with timer("embed"):
                kernels = method.kernels.build(cfg.embedder, pool, cross)
    with timer("select"):
        objective = None
        if kernels is not None:
            objective = stage.objective(
                kernels.pool, kernels.cross, cfg.selection, kernels.demo_means
            )
        request = OrderRequest(pool, budget, cfg.seed, cfg.selection, objective, task_map)
        picked = method.order(request)
    with timer("write"):
        return write_outputs(cfg, sets, picked, kernels, timer.seconds, fingerprint, extra_manifest)


def score_delift(
    cfg: Config,
    setup: st.Preparation,
    pool: ExampleSet,
    pool_enc: EncodedSet,
    cross: ExampleSet | None,
    timer: PhaseTimer,
    dry_run: bool,
    transform: UtilityTransform | None = None,
) -> Kernels | None:
    """Pairs, plan, estimate, score what the store lacks, reduce to kernels (None if dry run);
    `transform` rewrites each kernel's utilities before scaling (see scoring.stage.reduce)."""
    sets = st.text_sets(pool, cross)
    local = cfg.scoring.executor == "local" or cfg.pairs.embedder == "self"
    with timer("load_model"):
        scorer: Any = st.load_local_model(setup) if local else None
    with timer("pairs"):
        pairs, knn = st.choose_pairs(cfg.pairs, cfg.embedder, cfg.scoring, cfg.seed, sets, scorer)
    with timer("plan"):
        plan = st.plan(setup, sets, pairs)
        est = st.estimate(setup, sets, plan, pool_enc)
        speed = None
        if scorer is not None and (plan.pairs_to_score or dry_run):
            speed = st.calibrate(scorer, sets, cfg.scoring.calibration_pairs, cfg.seed)
        workers = 1 if cfg.scoring.executor == "local" else cfg.scoring.actors
        st.print_estimate(est, speed, workers, dry_run)
    if dry_run:
        return None
    with timer("score"):
        scored = st.execute(setup, sets, plan, scorer if cfg.scoring.executor == "local" else None)
    with timer("reduce"):
        k, cross_k, utilities, means = st.reduce(
            setup, sets, plan, scored, cfg.selection, cfg.stage, transform, cfg.seed
        )
    keep_table = cfg.pairs.mode == "dense"
    return Kernels(
        pool=k,
        cross=cross_k,
        utilities=utilities if keep_table else None,
        stats={
            **plan.stats,
            **est,
            **scored.counters,
            "pairs_mode": cfg.pairs.mode,
            **({"knn": knn} if knn else {}),
        },
        demo_means=means,
    )
