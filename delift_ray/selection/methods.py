"""Selection methods: how each of delift / se / random / quota / full turns a pool into a ranked
subset (delift-shuffled differs from delift only in its kernel; see score_stage.reduce)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from delift_ray.config import Config
from delift_ray.data.examples import ExampleSet
from delift_ray.errors import DeliftError
from delift_ray.models.embed import embed_texts
from delift_ray.progress import ProgressBar
from delift_ray.selection.greedy import Selection
from delift_ray.selection.kernels import cosine_kernel
from delift_ray.selection.objectives import (
    Objective,
    facility_location,
    fl_conditional_gain,
    fl_mutual_information,
)
from delift_ray.selection.randgreedi import select


@dataclass
class Kernels:
    """The pool kernel K and, per stage, the cross kernel (Q for task, P for continual)."""

    pool: sp.csr_matrix | np.ndarray
    cross: sp.csr_matrix | np.ndarray | None = None
    utilities: pa.Table | None = None
    stats: dict[str, Any] = field(default_factory=dict)


def cross_set(cfg: Config, sets: dict[str, ExampleSet]) -> ExampleSet | None:
    """The set the stage conditions on: target set (task), existing data (continual), or none."""
    return {"task": sets.get("target"), "continual": sets.get("existing")}.get(cfg.stage)


def objective_for(cfg: Config, kernels: Kernels) -> Objective:
    """FL, FLMI or FLCG over the kernels, by stage."""
    if cfg.stage == "task":
        return fl_mutual_information(kernels.pool, kernels.cross, eta=cfg.selection.eta)
    if cfg.stage == "continual":
        return fl_conditional_gain(kernels.pool, kernels.cross, nu=cfg.selection.nu)
    return facility_location(kernels.pool)


def run_greedy(cfg: Config, kernels: Kernels, ids: list[str], budget: int) -> Selection:
    """Greedy on the stage's objective, central or RandGreeDi per config, with a progress bar."""
    with ProgressBar("greedy", budget, unit="picks") as bar:
        return select(
            objective_for(cfg, kernels),
            budget,
            ids,
            mode=cfg.selection.distributed,
            parts=cfg.selection.parts,
            seed=cfg.seed,
            central_max_nonzeros=cfg.selection.central_max_nonzeros,
            optimizer=cfg.selection.optimizer,
            epsilon=cfg.selection.stochastic_epsilon,
            progress=bar.update_to,
        )


def se_kernels(cfg: Config, pool: ExampleSet, cross: ExampleSet | None) -> Kernels:
    """DELIFT-SE: cosine kernel (cos + 1) / 2 of sentence embeddings of x + y."""
    emb = embed_texts([x + y for x, y in zip(pool.xs, pool.ys)], cfg.embedder)
    out = Kernels(pool=cosine_kernel(emb, emb), stats={"embedded": len(pool.examples)})
    if cross is not None:
        cross_emb = embed_texts([x + y for x, y in zip(cross.xs, cross.ys)], cfg.embedder)
        out.cross = cosine_kernel(emb, cross_emb)
    return out


def random_order(n: int, budget: int, seed: int) -> np.ndarray:
    """A seeded random subset of `budget` indices out of n."""
    return np.random.default_rng(seed).permutation(n)[:budget].astype(np.int64)


def quota_groups(pool: ExampleSet, field_name: str) -> list[str]:
    """Each example's value of `field_name` as a group label; DeliftError if no row has it."""
    values = [e.record.get(field_name) for e in pool.examples]
    if pool.examples and all(v is None for v in values):
        raise DeliftError(f"selection.quota_by: no row of the pool has a field {field_name!r}")
    return ["(missing)" if v is None else str(v) for v in values]


def quota_order(groups: Sequence[str], budget: int, seed: int) -> np.ndarray:
    """A seeded random subset of `budget` indices with the budget shared equally by the groups
    (a group smaller than its share gives all its rows, the rest goes to the others), in a
    seeded random order."""
    rng = np.random.default_rng(seed)
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    names = sorted(members)
    take = dict.fromkeys(names, 0)
    left = min(budget, len(groups))
    while left:
        open_ = [g for g in names if take[g] < len(members[g])]
        share, extra = divmod(left, len(open_))
        lucky = set(rng.permutation(len(open_))[:extra].tolist()) if share == 0 else set()
        for k, g in enumerate(open_):
            add = min(share + (k in lucky), len(members[g]) - take[g])
            take[g] += add
            left -= add
    chosen = [i for g in names for i in rng.permutation(members[g])[: take[g]].tolist()]
    return np.asarray(chosen, dtype=np.int64)[rng.permutation(len(chosen))]
