"""Ray lives here: score blocks on a Ray Data actor pool (or in-process), report progress."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from delift_ray.distributed.resources import check_fits
from delift_ray.errors import DeliftError
from delift_ray.scoring.blocks import Block, BlockWorker, TextSet, WorkerSpec
from delift_ray.scoring.pairs import block_neighbours, check_k, neighbour_pairs, row_blocks

Report = Callable[[dict[str, Any]], None]


class ActorBlockWorker:
    """A BlockWorker as a Ray Data callable class. A DeliftError (a model that does not load on
    this node, a store it cannot write) comes back as the block's `error` instead of a remote
    traceback, so the driver can stop with that one line."""

    def __init__(self, job: WorkerSpec, sets: Any) -> None:
        self.worker: BlockWorker | None = None
        self.error = ""
        try:
            self.worker = BlockWorker(job, sets)
        except DeliftError as e:
            self.error = str(e)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Score every block row of a numpy batch; one summary row per block."""
        rows = [{k: batch[k][n] for k in batch} for n in range(len(batch["kind"]))]
        out = [self._score(Block.from_row(r)) for r in rows]
        return {k: np.array([o[k] for o in out]) for k in out[0]}

    def _score(self, block: Block) -> dict[str, Any]:
        # the keys of BlockWorker.score's summary, so that good and failed rows stack
        failed = {"block": "", "kind": block.kind, "rows": 0, "tokens": 0, "seconds": 0.0}
        if self.worker is None:
            return {**failed, "error": self.error}
        try:
            return {**self.worker.score(block), "error": ""}
        except DeliftError as e:
            return {**failed, "error": str(e)}


def score_blocks(
    job: WorkerSpec,
    sets: dict[str, TextSet],
    blocks: list[Block],
    on_block: Report,
    local_scorer: Any = None,
) -> None:
    """Score every block, calling `on_block` with each finished block's summary."""
    if not blocks:
        return
    if job.scoring.executor == "local":
        worker = BlockWorker(job, sets, scorer=local_scorer)
        for block in blocks:
            on_block(worker.score(block))
        return
    _score_on_ray(job, sets, blocks, on_block)


def _score_on_ray(job: WorkerSpec, sets: dict[str, TextSet], blocks: list[Block], on_block: Report):
    import ray

    cfg = job.scoring
    hint = "lower scoring.cpus_per_actor / scoring.gpus_per_actor"
    check_fits("a scoring actor", cfg.cpus_per_actor, cfg.gpus_per_actor, 1, hint)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # one bar of our own, counted in pairs
    ctx.verbose_stats_logs = False
    sets_ref = ray.put(sets)
    rows = [b.to_row() for b in blocks]
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    ds = ds.map_batches(
        ActorBlockWorker,
        fn_constructor_kwargs={"job": job, "sets": sets_ref},
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=min(cfg.actors, len(rows))),
        num_cpus=cfg.cpus_per_actor,
        num_gpus=cfg.gpus_per_actor or None,
    )
    for batch in ds.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=0):
        summary = {k: v[0].item() if hasattr(v[0], "item") else v[0] for k, v in batch.items()}
        error = summary.pop("error")
        if error:
            raise DeliftError(f"{error} (in a scoring actor)")
        on_block(summary)


def knn_pairs_on_ray(
    target_emb: np.ndarray,
    demo_emb: np.ndarray,
    k: int,
    same_set: bool,
    block_rows: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
    """knn_pairs with the blocked top-k search spread over Ray Data tasks (large pools)."""
    import ray

    check_k(k, len(demo_emb), same_set)
    blocks = row_blocks(len(target_emb), block_rows)
    refs = {"targets": ray.put(target_emb), "demos": ray.put(demo_emb)}
    ds = ray.data.from_items(
        [{"start": a, "stop": b} for a, b in blocks], override_num_blocks=len(blocks)
    )
    ds = ds.map_batches(
        _search_blocks,
        fn_kwargs={"refs": refs, "k": k, "same_set": same_set},
        batch_size=1,
        batch_format="numpy",
        num_cpus=0.5,
    )
    found = {int(r["start"]): r["neighbours"] for r in ds.iter_rows()}
    nbrs = np.concatenate([np.asarray(found[a]).reshape(b - a, k) for a, b in blocks])
    return neighbour_pairs(nbrs, same_set)


def _search_blocks(
    batch: dict[str, np.ndarray], refs: dict[str, Any], k: int, same_set: bool
) -> dict[str, Any]:
    import ray

    targets, demos = ray.get(refs["targets"]), ray.get(refs["demos"])
    starts, stops = batch["start"], batch["stop"]
    found = [
        block_neighbours(targets, demos, k, same_set, int(a), int(b)).reshape(-1)
        for a, b in zip(starts, stops)
    ]
    return {"start": starts, "neighbours": found}
