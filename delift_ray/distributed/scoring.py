"""Scoring on Ray: the blocks of a run on the actor map (or in-process, per scoring.executor)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from delift_ray.distributed.maps import Batch, ParquetRows, actor_map
from delift_ray.scoring.blocks import Block, BlockWorker, TextSet, WorkerSpec, WorkItems
from delift_ray.scoring.templates import EncodedSet

Report = Callable[[dict[str, Any]], None]


class BatchedBlockWorker:
    """A BlockWorker fed numpy batches of block rows: one summary row per block, with the id
    of the Ray node that scored it."""

    def __init__(
        self, job: WorkerSpec, sets: dict[str, TextSet], d0: np.ndarray | None = None
    ) -> None:
        import ray

        self.worker = BlockWorker(job, sets)
        self.d0 = d0  # each pool row's d0, for work items read from files (which carry none)
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: Batch) -> Batch:
        """Score every block of the batch (writing each to the store); their summaries."""
        rows = [{k: batch[k][n] for k in batch} for n in range(len(batch["kind"]))]
        out = [{**self.worker.score(self.block(r)), "node": self.node} for r in rows]
        return {k: np.array([o[k] for o in out]) for k in out[0]}

    def block(self, row: dict[str, Any]) -> Block:
        """A batch row as a Block (its d0 from the pool's when the row has none)."""
        if "d0" not in row:
            assert self.d0 is not None
            i = np.asarray(row["i"], dtype=np.int64)
            row = {**row, "i": i, "d0": self.d0[i]}
        return Block.from_row(row)


def score_blocks(
    job: WorkerSpec,
    sets: dict[str, TextSet],
    blocks: list[Block] | WorkItems,
    on_block: Report,
    local_scorer: Any = None,
    encoded: dict[str, EncodedSet] | None = None,
) -> None:
    """Score every block (a list, or a plan's work-item files), calling `on_block` with each
    block's summary: in-process (with `encoded` sets not tokenized again) or on a Ray Data actor
    pool that reads the work items itself, per scoring.executor."""
    count = blocks.count if isinstance(blocks, WorkItems) else len(blocks)
    if not count:
        return
    if job.scoring.executor == "local":
        worker = BlockWorker(job, sets, scorer=local_scorer, encoded=encoded)
        for block in blocks.blocks() if isinstance(blocks, WorkItems) else blocks:
            on_block(worker.score(block))
        return
    kwargs: dict[str, Any] = {"job": job, "sets": sets}
    rows: list[dict[str, Any]] | ParquetRows
    if isinstance(blocks, WorkItems):
        kwargs["d0"] = blocks.d0
        rows = ParquetRows(blocks.paths, blocks.store.fs, blocks.count)
    else:
        rows = [b.to_row() for b in blocks]
    for summary in actor_map(
        BatchedBlockWorker, kwargs, rows, job.scoring, "a scoring actor", "scoring"
    ):
        on_block(summary)
