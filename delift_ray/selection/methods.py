"""The selection methods, one entry each in METHODS: what a method needs (scored utilities,
sentence embeddings or nothing), how it gets its kernels, and how it orders the pool.

Adding a method is one entry in METHODS (and its test): the config accepts its name, a selection
run builds its kernels and orders the pool with it, and compare plans it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from delift_ray.config import EmbedderConfig, SelectionConfig
from delift_ray.data.examples import ExampleSet, embedding_texts
from delift_ray.errors import ConfigError, DeliftError
from delift_ray.map_fn import MapFn, local_map
from delift_ray.models.embed import embed_texts
from delift_ray.progress import ProgressBar
from delift_ray.selection.greedy import Selection
from delift_ray.selection.kernels import cosine_kernel
from delift_ray.selection.objectives import Objective
from delift_ray.selection.randgreedi import select


@dataclass
class Kernels:
    """The pool kernel K and, per stage, the cross kernel (Q for task, P for continual)."""

    pool: sp.csr_matrix | np.ndarray
    cross: sp.csr_matrix | np.ndarray | None = None
    utilities: pa.Table | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    # m_j per pool column (kernels from scored utilities): selection.modular's term
    demo_means: np.ndarray | None = None


@dataclass
class Draw:
    """Pool rows picked without an objective (random, quota, full): positions in pick order."""

    indices: np.ndarray


@dataclass
class OrderRequest:
    """What a method orders: the pool, the budget, and the stage's objective over the method's
    kernels (None for a method without kernels)."""

    pool: ExampleSet
    budget: int
    seed: int
    selection: SelectionConfig
    objective: Objective | None = None
    map_fn: MapFn = local_map  # runs RandGreeDi's parts (a workflow passes Ray's task map)


# (utilities of one kernel's pairs, seed, the kernel's number) -> the utilities to scale
UtilityTransform = Callable[[np.ndarray, int, int], np.ndarray]


@dataclass(frozen=True)
class ScoredUtilities:
    """Kernels reduced from utilities the model scores (scoring.stage); `transform`, if set,
    rewrites each kernel's utilities before scaling (the written table keeps the true ones)."""

    transform: UtilityTransform | None = None


@dataclass(frozen=True)
class SentenceEmbeddings:
    """Kernels built from sentence embeddings: build(embedder, pool, cross set or None)."""

    build: Callable[[EmbedderConfig, ExampleSet, ExampleSet | None], Kernels]


@dataclass(frozen=True)
class Method:
    """One selection method: where its kernels come from (None: it needs none), how it orders
    the pool, and how compare plans it."""

    kernels: ScoredUtilities | SentenceEmbeddings | None
    order: Callable[[OrderRequest], Selection | Draw]
    seeded_draw: bool = False  # a seeded random pick: compare draws compare.random_subsets
    whole_pool: bool = False  # takes every row: compare runs it once, at budget 1.0
    check: Callable[[SelectionConfig], None] | None = None  # config rules of its own
    preset: str | None = None  # a selection.preset it always runs with (None: the config's)

    @property
    def needs(self) -> Literal["utilities", "embeddings", "nothing"]:
        """What the method needs before it can order the pool."""
        if isinstance(self.kernels, ScoredUtilities):
            return "utilities"
        return "nothing" if self.kernels is None else "embeddings"


def run_greedy(req: OrderRequest) -> Selection:
    """Greedy on the stage's objective, central or RandGreeDi per config, with a progress bar."""
    if req.objective is None:
        raise DeliftError("selection: greedy needs a method that builds kernels")
    sel = req.selection
    with ProgressBar("greedy", req.budget, unit="picks") as bar:
        return select(
            req.objective,
            req.budget,
            req.pool.ids,
            mode=sel.distributed,
            parts=sel.parts,
            seed=req.seed,
            central_max_nonzeros=sel.central_max_nonzeros,
            optimizer=sel.optimizer,
            epsilon=sel.stochastic_epsilon,
            progress=bar.update_to,
            map_fn=req.map_fn,
        )


def se_kernels(embedder: EmbedderConfig, pool: ExampleSet, cross: ExampleSet | None) -> Kernels:
    """DELIFT-SE: cosine kernel (cos + 1) / 2 of sentence embeddings of x + y."""
    emb = embed_texts(embedding_texts(pool.xs, pool.ys, pool.chats), embedder)
    out = Kernels(pool=cosine_kernel(emb, emb), stats={"embedded": len(pool.examples)})
    if cross is not None:
        cross_emb = embed_texts(embedding_texts(cross.xs, cross.ys, cross.chats), embedder)
        out.cross = cosine_kernel(emb, cross_emb)
    return out


def permute_utilities(u: np.ndarray, seed: int, kernel: int) -> np.ndarray:
    """delift-shuffled: the utilities permuted over their pairs with default_rng([seed, kernel])."""
    return np.random.default_rng([seed, kernel]).permutation(u)


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


def random_draw(req: OrderRequest) -> Draw:
    """random: a seeded draw of `budget` pool rows."""
    return Draw(random_order(len(req.pool.examples), req.budget, req.seed))


def quota_draw(req: OrderRequest) -> Draw:
    """quota: a seeded draw with the budget shared equally by the values of selection.quota_by."""
    groups = quota_groups(req.pool, req.selection.quota_by)
    return Draw(quota_order(groups, req.budget, req.seed))


def excluded_rows(pool: ExampleSet, fields: Sequence[str]) -> np.ndarray:
    """Whether each example has a truthy value in any of `fields`; DeliftError if no row of the
    pool has one of them at all."""
    for name in fields:
        if pool.examples and all(name not in e.record for e in pool.examples):
            raise DeliftError(f"selection.exclude_by: no row of the pool has a field {name!r}")
    return np.array([any(e.record.get(f) for f in fields) for e in pool.examples], dtype=bool)


def clean_draw(req: OrderRequest) -> Draw:
    """clean: a seeded draw of `budget` rows among those with no truthy selection.exclude_by
    field; DeliftError if fewer rows are left than the budget."""
    keep = np.flatnonzero(~excluded_rows(req.pool, req.selection.exclude_fields()))
    if len(keep) < req.budget:
        raise DeliftError(
            f"method clean: {len(keep)} rows are left after selection.exclude_by, "
            f"fewer than the budget of {req.budget}"
        )
    return Draw(keep[random_order(len(keep), req.budget, req.seed)])


def every_row(req: OrderRequest) -> Draw:
    """full: every pool row, in pool order."""
    return Draw(np.arange(len(req.pool.examples), dtype=np.int64))


def check_quota_field(selection: SelectionConfig) -> None:
    """quota needs selection.quota_by."""
    if not selection.quota_by.strip():
        raise ConfigError("config: method quota needs selection.quota_by (a field of the rows)")


def check_exclude_fields(selection: SelectionConfig) -> None:
    """clean needs selection.exclude_by."""
    if not selection.exclude_fields():
        raise ConfigError(
            "config: method clean needs selection.exclude_by (fields marking rows to leave out)"
        )


METHODS: dict[str, Method] = {
    "delift": Method(ScoredUtilities(), run_greedy),
    # DELIFT exactly as the paper (selection.preset: paper), whatever the variant keys say
    "delift-paper": Method(ScoredUtilities(), run_greedy, preset="paper"),
    # control: the same pairs, their utilities permuted before the kernel is built
    "delift-shuffled": Method(ScoredUtilities(permute_utilities), run_greedy),
    "se": Method(SentenceEmbeddings(se_kernels), run_greedy),
    "random": Method(None, random_draw, seeded_draw=True),
    # control: random within each value of selection.quota_by, the budget shared equally
    "quota": Method(None, quota_draw, seeded_draw=True, check=check_quota_field),
    # control: random among the rows whose selection.exclude_by fields are all false
    "clean": Method(None, clean_draw, seeded_draw=True, check=check_exclude_fields),
    "full": Method(None, every_row, whole_pool=True),
}
