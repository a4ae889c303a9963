"""Scoring work: plan what the block store lacks, and score it one block at a time.

A block is the unit of work and of storage: either d0 for a run of targets ("plain"), or d1 for
every missing pair of a group of demonstrations ("pairs", grouped by demonstration so each
prefix is computed once). `BlockWorker` scores a block and writes it to the store before it
reports back, so a crash loses at most the blocks in flight. It runs in-process or in a Ray Data
actor (see `distributed/scoring.py`); it knows nothing of the pipeline or of Ray.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from delift_ray.config import ModelConfig, ScoringConfig, TemplatesConfig
from delift_ray.data.examples import ChatParts
from delift_ray.scoring.store import BlockStore, block_table

POOL = "pool"


@dataclass
class TextSet:
    """Ids and rendered (x, y) texts of one example set, and each chat-template row's parts."""

    ids: list[str]
    xs: list[str]
    ys: list[str]
    chat: list[ChatParts | None] | None = None


@dataclass
class WorkerSpec:
    """What every scorer of one run shares: model, templates, limits and the store."""

    model: ModelConfig
    templates: TemplatesConfig
    scoring: ScoringConfig
    max_length: int
    store_uri: str
    store_key: str


@dataclass
class Block:
    """One unit of work: d0 of targets i ("plain"), or d1 of pairs (i, j) with j from `demos`."""

    kind: str
    demos: str
    i: np.ndarray
    j: np.ndarray
    d0: np.ndarray

    def to_row(self) -> dict[str, Any]:
        """As a Ray Data row."""
        return {"kind": self.kind, "demos": self.demos, "i": self.i, "j": self.j, "d0": self.d0}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Block:
        """From a Ray Data row (numpy batch item)."""
        return cls(
            kind=str(row["kind"]),
            demos=str(row["demos"]),
            i=np.asarray(row["i"], dtype=np.int64),
            j=np.asarray(row["j"], dtype=np.int64),
            d0=np.asarray(row["d0"], dtype=np.float64),
        )


def pair_table(
    target_ids: list[str], demo_ids: list[str], i: np.ndarray, j: np.ndarray
) -> pa.Table:
    """Needed pairs as (target_id, demo_id, i, j)."""
    t = np.asarray(target_ids, dtype=object)
    d = np.asarray(demo_ids, dtype=object)
    return pa.table(
        {
            "target_id": pa.array(t[i], pa.string()),
            "demo_id": pa.array(d[j], pa.string()),
            "i": pa.array(i, pa.int64()),
            "j": pa.array(j, pa.int64()),
        }
    )


def missing(needed: pa.Table, stored: pa.Table) -> pa.Table:
    """Rows of `needed` whose (target_id, demo_id) is not in `stored`."""
    if stored.num_rows == 0:
        return needed
    keys = stored.select(["target_id", "demo_id"])
    return needed.join(keys, ["target_id", "demo_id"], join_type="left anti")


def plan_plain(todo: np.ndarray, per_block: int) -> list[Block]:
    """Blocks of d0 work for the target indices in `todo`."""
    empty = np.zeros(0)
    return [
        Block("plain", POOL, todo[s : s + per_block], np.zeros(0, np.int64), empty)
        for s in range(0, len(todo), per_block)
    ]


def plan_pairs(todo: pa.Table, demos: str, d0: np.ndarray, demos_per_block: int) -> list[Block]:
    """Blocks of d1 work: the missing pairs of each group of `demos_per_block` demonstrations."""
    if todo.num_rows == 0:
        return []
    i = todo["i"].to_numpy()
    j = todo["j"].to_numpy()
    order = np.lexsort((i, j))
    i, j = i[order], j[order]
    starts = np.flatnonzero(np.r_[True, j[1:] != j[:-1]])  # first pair of each demonstration
    cuts = np.r_[starts[::demos_per_block], len(j)]
    return [Block("pairs", demos, i[a:b], j[a:b], d0[i[a:b]]) for a, b in itertools.pairwise(cuts)]


def d0_by_index(stored: pa.Table, ids: list[str]) -> np.ndarray:
    """d0 for each id in `ids` from stored plain blocks (NaN where missing)."""
    found = dict(zip(stored["target_id"].to_pylist(), stored["d0"].to_numpy()))
    return np.array([found.get(x, np.nan) for x in ids], dtype=np.float64)


def needed_utilities(needed: pa.Table, stored: pa.Table) -> pa.Table:
    """The stored (d0, d1, u) of every needed pair, with its (i, j); one row per pair."""
    stored = _first_per_pair(stored)
    return needed.join(stored, ["target_id", "demo_id"], join_type="inner")


def _first_per_pair(t: pa.Table) -> pa.Table:
    keyed = t.append_column("_row", pa.array(np.arange(t.num_rows)))
    first = keyed.group_by(["target_id", "demo_id"], use_threads=False).aggregate([("_row", "min")])
    return t.take(pc.sort_indices(first["_row_min"]))


class BlockWorker:
    """Scores blocks and writes each to the store (in-process, or inside a Ray actor)."""

    def __init__(self, job: WorkerSpec, sets: dict[str, TextSet], scorer: Any = None) -> None:
        if scorer is None:
            scorer = load_utility_model(job)
        self.scorer = scorer
        self.ids = {name: s.ids for name, s in sets.items()}
        self.enc = {name: scorer.encode(s.xs, s.ys, s.chat) for name, s in sets.items()}
        self.stores = {
            kind: BlockStore(job.store_uri, job.store_key, kind) for kind in ("plain", "pairs")
        }

    def score(self, block: Block) -> dict[str, Any]:
        """Score one block, write it to the store; returns its name, rows, tokens and seconds."""
        start = time.perf_counter()
        pool, pool_ids = self.enc[POOL], self.ids[POOL]
        targets = [pool_ids[k] for k in block.i]
        if block.kind == "plain":
            d0 = self.scorer.plain(pool, block.i)
            nan = np.full(len(d0), np.nan)
            table = block_table(targets, [""] * len(d0), d0, nan)
            tokens = self.scorer.prompts.lengths(pool, block.i).sum()
        else:
            demos, demo_ids = self.enc[block.demos], self.ids[block.demos]
            d1 = self.scorer.pairs(pool, demos, block.i, block.j)
            table = block_table(targets, [demo_ids[k] for k in block.j], block.d0, d1)
            tokens = self.scorer.prompts.lengths(pool, block.i, demos, block.j).sum()
        name = self.stores[block.kind].write(table)
        return {
            "block": name,
            "kind": block.kind,
            "rows": len(block.i),
            "tokens": int(tokens),
            "seconds": time.perf_counter() - start,
        }


def load_utility_model(job: WorkerSpec) -> Any:
    """Load the model and wrap it in a UtilityModel (inside an actor or in-process)."""
    import torch

    from delift_ray.models.load import load_model
    from delift_ray.scoring.utility_model import UtilityModel

    # One intra-op thread per reserved CPU: oversubscribed OpenMP threads spin and can make a
    # CPU forward pass 10-30x slower when actors share cores.
    torch.set_num_threads(max(1, int(job.scoring.cpus_per_actor)))
    lm = load_model(job.model)
    return UtilityModel(
        lm.model, lm.tokenizer, job.templates, job.scoring, job.max_length, device=lm.device
    )
