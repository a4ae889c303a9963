"""Scoring on Ray: the blocks of a run on the actor map (or in-process, per scoring.executor)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from delift_ray.distributed.maps import Batch, actor_map
from delift_ray.scoring.blocks import Block, BlockWorker, TextSet, WorkerSpec

Report = Callable[[dict[str, Any]], None]


class BatchedBlockWorker:
    """A BlockWorker fed numpy batches of block rows: one summary row per block, with the id
    of the Ray node that scored it."""

    def __init__(self, job: WorkerSpec, sets: dict[str, TextSet]) -> None:
        import ray

        self.worker = BlockWorker(job, sets)
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: Batch) -> Batch:
        """Score every block of the batch (writing each to the store); their summaries."""
        rows = [{k: batch[k][n] for k in batch} for n in range(len(batch["kind"]))]
        out = [{**self.worker.score(Block.from_row(r)), "node": self.node} for r in rows]
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
