"""Which (target i, demonstration j) pairs get scored: all of them, or each target's k nearest.

Pairs come back grouped by demonstration j, the order in which prefix sharing scores them.
"""

from __future__ import annotations

import numpy as np

from delift_ray.errors import DeliftError


def dense_pairs(n_targets: int, n_demos: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (i, j), grouped by demonstration j."""
    j, i = np.divmod(np.arange(n_targets * n_demos, dtype=np.int64), n_targets)
    return i, j


def top_k_neighbours(
    queries: np.ndarray,
    candidates: np.ndarray,
    k: int,
    exclude_self_offset: int | None = None,
) -> np.ndarray:
    """Exact top-k candidates by cosine (rows are unit vectors), shape (len(queries), k).

    With `exclude_self_offset`, query row r is candidate r + offset and never its own neighbour.
    Neighbours come most similar first; the result is deterministic for the same inputs.
    """
    sims = np.asarray(queries, np.float32) @ np.asarray(candidates, np.float32).T
    if exclude_self_offset is not None:
        rows = np.arange(len(queries))
        sims[rows, rows + exclude_self_offset] = -np.inf
    if k < sims.shape[1]:
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    else:
        top = np.broadcast_to(np.arange(sims.shape[1]), sims.shape).copy()
    top_sims = np.take_along_axis(sims, top, axis=1)
    order = np.lexsort((top, -top_sims), axis=1)
    return np.take_along_axis(top, order, axis=1).astype(np.int64)


def knn_pairs(
    target_emb: np.ndarray,
    demo_emb: np.ndarray,
    k: int,
    same_set: bool,
    block_rows: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
    """Each target's k nearest demonstrations (plus itself when both sets are the same)."""
    n, m = len(target_emb), len(demo_emb)
    limit = m - 1 if same_set else m
    if k < 1:
        raise DeliftError(f"config: pairs.k must be >= 1, got {k}")
    if k > limit:
        raise DeliftError(
            f"config: pairs.k={k} needs more than the {m} candidates available; "
            "lower pairs.k or use pairs.mode=dense for small pools"
        )
    parts = []
    for start in range(0, n, block_rows):
        stop = min(start + block_rows, n)
        offset = start if same_set else None
        parts.append(top_k_neighbours(target_emb[start:stop], demo_emb, k, offset))
    nbrs = np.concatenate(parts) if parts else np.empty((0, k), np.int64)
    i = np.repeat(np.arange(n, dtype=np.int64), k)
    j = nbrs.reshape(-1)
    if same_set:
        i = np.concatenate([i, np.arange(n, dtype=np.int64)])
        j = np.concatenate([j, np.arange(n, dtype=np.int64)])
    order = np.lexsort((i, j))
    return i[order], j[order]
