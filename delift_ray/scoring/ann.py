"""Approximate top-k neighbours for large pools: a faiss HNSW graph on inner products of unit
vectors (cosine), with the exact search's contract: shape (targets, k), self excluded when the
targets are the demonstrations, most similar first and equal similarities by lower index.

The graph is built single-threaded, so the same embeddings give the same neighbours on every run
(faiss builds HNSW in an unspecified order with more threads) and a re-run needs no new pairs;
the search uses every thread faiss has. faiss comes from the `scale` extra.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from delift_ray.extras import optional_import
from delift_ray.scoring.pairs import check_k, top_k_neighbours

QUERY_ROWS = 65_536  # targets per faiss search call: bounds the (rows, width) results in memory
TIE_MARGIN = 4  # results beyond k, so that ties at the k-th place resolve by lower index


@dataclass(frozen=True)
class HnswSettings:
    """The HNSW graph's degree and build/search beams (larger: higher recall, slower)."""

    m: int = 32
    ef_construction: int = 64
    ef_search: int = 128


def load_faiss() -> ModuleType:
    """The faiss module, or a one-line DeliftError naming the extra that installs it."""
    return optional_import("faiss", "scale", "approximate kNN search (pairs.ann_from_rows)")


def hnsw_index(demos: np.ndarray, settings: HnswSettings) -> Any:
    """A faiss HNSW inner-product index over the demonstration embeddings, built in one thread."""
    faiss = load_faiss()
    index = faiss.IndexHNSWFlat(demos.shape[1], settings.m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = settings.ef_construction
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        index.add(np.ascontiguousarray(demos, np.float32))
    finally:
        faiss.omp_set_num_threads(threads)
    index.hnsw.efSearch = settings.ef_search
    return index


def hnsw_neighbours(
    targets: np.ndarray, demos: np.ndarray, k: int, same_set: bool, settings: HnswSettings
) -> np.ndarray:
    """Approximate top-k demonstrations of every target, shape (len(targets), k)."""
    check_k(k, len(demos), same_set)
    index = hnsw_index(demos, settings)
    width = min(k + (1 if same_set else 0) + TIE_MARGIN, len(demos))
    parts = []
    for start in range(0, len(targets), QUERY_ROWS):
        rows = np.arange(start, min(start + QUERY_ROWS, len(targets)), dtype=np.int64)
        query = np.ascontiguousarray(targets[rows], np.float32)
        sims, ids = index.search(query, width)
        parts.append(_contract(sims, ids, rows if same_set else None, k, query, demos))
    return np.concatenate(parts) if parts else np.empty((0, k), np.int64)


def _contract(
    sims: np.ndarray,
    ids: np.ndarray,
    own: np.ndarray | None,
    k: int,
    query: np.ndarray,
    demos: np.ndarray,
) -> np.ndarray:
    """faiss's results as the exact search returns them: each row's own index dropped, the rest
    ordered by (-similarity, index) and cut to k; rows faiss could not fill are searched exactly.
    """
    invalid = ids < 0
    if own is not None:
        invalid |= ids == own[:, None]
    key = np.where(invalid, len(demos), ids)  # invalid results sort last
    order = np.lexsort((key, np.where(invalid, np.inf, -sims)), axis=1)[:, :k]
    nbrs = np.take_along_axis(key, order, axis=1).astype(np.int64)
    short = np.flatnonzero((nbrs == len(demos)).any(axis=1))
    if len(short):
        nbrs[short] = top_k_neighbours(query[short], demos, k, None if own is None else own[short])
    return nbrs
