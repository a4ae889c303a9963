"""One selection run, stage by stage, in the order it happens.

read -> (delift: tokenizer + pairs -> plan -> estimate -> score on Ray -> reduce | se: embed)
     -> greedy -> outputs + manifest
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from delift_ray.config import SCORED_METHODS, Config, resolve_budget
from delift_ray.data.examples import ExampleSet, read_examples
from delift_ray.distributed.session import ray_session
from delift_ray.errors import DeliftError
from delift_ray.files import prepare_output_dir
from delift_ray.scoring import stage as st
from delift_ray.scoring.templates import EncodedSet
from delift_ray.selection.greedy import Selection
from delift_ray.selection.methods import (
    Kernels,
    cross_set,
    quota_groups,
    quota_order,
    random_order,
    run_greedy,
    se_kernels,
)
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
    """Read the pool and, if the stage needs one, the target or existing set."""
    sets = {"pool": read_examples(cfg.data)}
    if cfg.stage == "task" and cfg.target is not None:
        sets["target"] = read_examples(cfg.target)
    if cfg.stage == "continual" and cfg.existing is not None:
        sets["existing"] = read_examples(cfg.existing)
    return sets


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
    if not dry_run:
        prepare_output_dir(cfg.output_dir)
    with timer("read"):
        sets = dict(sets) if sets is not None else read_sets(cfg)
    pool, cross = sets["pool"], cross_set(cfg, sets)
    if not pool.examples and not dry_run:
        write_rejects(cfg, sets)  # so the error's pointer to rejects.parquet holds
    resolve_budget(cfg.budget, len(pool.examples))  # fail before any expensive work
    kernels: Kernels | None = None
    fingerprint = None
    if cfg.method in SCORED_METHODS:
        with timer("prepare"):
            setup = st.prepare(cfg)
            fingerprint = setup.fingerprint
            pool, pool_enc = st.drop_unscorable(setup.prompts, pool)
            sets["pool"] = pool
        budget = resolve_budget(cfg.budget, len(pool.examples))
        kernels = score_delift(cfg, setup, pool, pool_enc, cross, timer, dry_run)
        if kernels is None:
            return None
    else:
        budget = resolve_budget(cfg.budget, len(pool.examples))
        if dry_run:
            print(
                f"[delift-ray] plan: method {cfg.method}, select {budget} of {len(pool.examples)}"
            )
            return None
        if cfg.method == "se":
            with timer("embed"):
                kernels = se_kernels(cfg, pool, cross)
    with timer("select"):
        selection = choose(cfg, kernels, pool, budget)
    with timer("write"):
        return write_outputs(
            cfg, sets, selection, kernels, timer.seconds, fingerprint, extra_manifest
        )


def score_delift(
    cfg: Config,
    setup: st.Preparation,
    pool: ExampleSet,
    pool_enc: EncodedSet,
    cross: ExampleSet | None,
    timer: PhaseTimer,
    dry_run: bool,
) -> Kernels | None:
    """Pairs, plan, estimate, score what the store lacks, reduce to kernels (None if dry run)."""
    sets = st.text_sets(pool, cross)
    local = cfg.scoring.executor == "local" or cfg.pairs.embedder == "self"
    with timer("load_model"):
        scorer: Any = st.load_local_model(setup) if local else None
    on_ray = st.search_on_ray(cfg, len(pool.examples))
    with timer("pairs"), ray_session() if on_ray else nullcontext():
        pairs = st.choose_pairs(cfg, sets, scorer)
    with timer("plan"):
        plan = st.plan(setup, sets, pairs)
        est = st.estimate(setup, sets, plan, pool_enc)
        speed = None
        if scorer is not None and (plan.pairs_to_score or dry_run):
            speed = st.calibrate(scorer, sets, cfg.scoring.calibration_pairs, cfg.seed)
        workers = 1 if cfg.scoring.executor == "local" else cfg.scoring.actors
        st.print_estimate(est, speed, workers)
    if dry_run:
        return None
    work = plan.pairs_to_score or len(plan.todo_plain)
    session = ray_session() if cfg.scoring.executor == "ray" and work else None
    with timer("score"), session or nullcontext():
        scored = st.execute(setup, sets, plan, scorer if cfg.scoring.executor == "local" else None)
    with timer("reduce"):
        k, cross_k, utilities = st.reduce(cfg, setup, sets, plan, scored)
    keep_table = cfg.pairs.mode == "dense"
    return Kernels(
        pool=k,
        cross=cross_k,
        utilities=utilities if keep_table else None,
        stats={**plan.stats, **est, **scored.counters, "pairs_mode": cfg.pairs.mode},
    )


def choose(cfg: Config, kernels: Kernels | None, pool: ExampleSet, budget: int) -> Selection:
    """The ranked pick for the method: greedy on a kernel, a seeded random draw (overall or per
    quota group), or everything."""
    if kernels is not None:
        return run_greedy(cfg, kernels, pool.ids, budget)
    n = len(pool.examples)
    if cfg.method == "full":
        order = np.arange(n, dtype=np.int64)
    elif cfg.method == "random":
        order = random_order(n, budget, cfg.seed)
    elif cfg.method == "quota":
        order = quota_order(quota_groups(pool, cfg.selection.quota_by), budget, cfg.seed)
    else:
        raise DeliftError(f"method {cfg.method} needs a kernel")  # pragma: no cover
    nan = np.full(len(order), np.nan)
    return Selection(
        indices=order,
        gains=nan,
        objective=nan,
        value=float("nan"),
        upper_bound=float("nan"),
        optimizer=cfg.method,
        evaluations=0,
    )
