"""Each target's k nearest demonstrations: exact top-k for small candidate sets, faiss HNSW from
`pairs.ann_from_rows` candidates on, with its recall@k measured against exact top-k on a seeded
sample of targets (searched exactly against every candidate).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from delift_ray.config import PairsConfig
from delift_ray.map_fn import MapFn, local_map
from delift_ray.scoring.ann import HnswSettings, hnsw_neighbours
from delift_ray.scoring.pairs import exact_neighbours

log = logging.getLogger(__name__)


def uses_ann(pairs: PairsConfig, n_candidates: int) -> bool:
    """Whether a search among `n_candidates` demonstrations takes the approximate path."""
    return n_candidates >= pairs.ann_from_rows


def hnsw_settings(pairs: PairsConfig) -> HnswSettings:
    """The HNSW settings the config asks for."""
    return HnswSettings(pairs.ann_m, pairs.ann_ef_construction, pairs.ann_ef_search)


def recall_at_k(
    approx: np.ndarray,
    targets: np.ndarray,
    demos: np.ndarray,
    same_set: bool,
    sample: int,
    seed: int,
    map_fn: MapFn = local_map,
) -> tuple[float, int]:
    """Mean share of the exact top-k found by `approx` (n, k) over `sample` seeded targets (all
    if fewer): (recall@k, targets sampled)."""
    n, k = approx.shape
    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(sample, n), replace=False))
    exact = exact_neighbours(targets, demos, k, same_set, rows, map_fn=map_fn)
    width = len(demos)
    found = np.isin(rows[:, None] * width + approx[rows], rows[:, None] * width + exact)
    return float(found.mean()) if len(rows) else 1.0, len(rows)


def neighbours(
    targets: np.ndarray,
    demos: np.ndarray,
    k: int,
    same_set: bool,
    pairs: PairsConfig,
    seed: int,
    map_fn: MapFn = local_map,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Top-k neighbours (len(targets), k) by the path the candidate count picks, and what the
    manifest records of the search: method, k, seconds, recall@k and its sample."""
    start = time.perf_counter()
    if not uses_ann(pairs, len(demos)):
        nbrs = exact_neighbours(targets, demos, k, same_set, map_fn=map_fn)
        report = {"method": "exact", "k": k, "recall_at_k": 1.0, "recall_sample": 0}
        report["seconds"] = round(time.perf_counter() - start, 3)
        return nbrs, report
    nbrs = hnsw_neighbours(targets, demos, k, same_set, hnsw_settings(pairs))
    seconds = time.perf_counter() - start
    recall, sampled = recall_at_k(nbrs, targets, demos, same_set, pairs.recall_sample, seed, map_fn)
    log.info(
        "kNN: faiss HNSW over %d candidates for %d targets, k=%d, in %.1f s; "
        "recall@%d %.4f against exact top-k on %d sampled targets",
        len(demos),
        len(targets),
        k,
        seconds,
        k,
        recall,
        sampled,
    )
    report = {
        "method": "hnsw",
        "k": k,
        "recall_at_k": round(recall, 5),
        "recall_sample": sampled,
        "seconds": round(seconds, 3),
        "ef_search": pairs.ann_ef_search,
    }
    return nbrs, report
