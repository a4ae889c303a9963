"""Scoring and the kNN search on Ray: blocks on the actor map, neighbour search on the task map."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from delift_ray.distributed.maps import Batch, actor_map, task_map
from delift_ray.scoring.blocks import Block, BlockWorker, TextSet, WorkerSpec
from delift_ray.scoring.pairs import block_neighbours, check_k, neighbour_pairs, row_blocks

Report = Callable[[dict[str, Any]], None]


class BatchedBlockWorker:
    """A BlockWorker fed numpy batches of block rows: one summary row per block."""

    def __init__(self, job: WorkerSpec, sets: dict[str, TextSet]) -> None:
        self.worker = BlockWorker(job, sets)

    def __call__(self, batch: Batch) -> Batch:
        """Score every block of the batch (writing each to the store); their summaries."""
        rows = [{k: batch[k][n] for k in batch} for n in range(len(batch["kind"]))]
        out = [self.worker.score(Block.from_row(r)) for r in rows]
        return {k: np.array([o[k] for o in out]) for k in out[0]}


def score_blocks(
    job: WorkerSpec,
    sets: dict[str, TextSet],
    blocks: list[Block],
    on_block: Report,
    local_scorer: Any = None,
) -> None:
    """Score every block, calling `on_block` with each block's summary (in-process or on a Ray
    Data actor pool, per scoring.executor)."""
    if not blocks:
        return
    if job.scoring.executor == "local":
        worker = BlockWorker(job, sets, scorer=local_scorer)
        for block in blocks:
            on_block(worker.score(block))
        return
    rows = [b.to_row() for b in blocks]
    kwargs = {"job": job, "sets": sets}
    for summary in actor_map(
        BatchedBlockWorker, kwargs, rows, job.scoring, "a scoring actor", "scoring"
    ):
        on_block(summary)


def knn_pairs_on_ray(
    target_emb: np.ndarray,
    demo_emb: np.ndarray,
    k: int,
    same_set: bool,
    block_rows: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
    """knn_pairs with the blocked top-k search spread over Ray tasks (large pools)."""
    check_k(k, len(demo_emb), same_set)
    search = partial(_search_block, k=k, same_set=same_set)
    embeddings = {"targets": target_emb, "demos": demo_emb}
    parts = task_map(search, row_blocks(len(target_emb), block_rows), embeddings, cpus=0.5)
    nbrs = np.concatenate(parts) if parts else np.empty((0, k), np.int64)
    return neighbour_pairs(nbrs, same_set)


def _search_block(
    block: tuple[int, int], targets: np.ndarray, demos: np.ndarray, k: int, same_set: bool
) -> np.ndarray:
    return block_neighbours(targets, demos, k, same_set, *block)
