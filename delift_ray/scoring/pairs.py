"""Which (target i, demonstration j) pairs get scored: all of them, or each target's k nearest.

Pairs come back grouped by demonstration j, the order in which prefix sharing scores them.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from delift_ray.errors import ConfigError
from delift_ray.map_fn import MapFn, local_map

SIMS_PER_BLOCK = 1 << 25  # one block's similarity matrix: 128 MB of float32 (and its negation)


def dense_pairs(n_targets: int, n_demos: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (i, j), grouped by demonstration j."""
    j, i = np.divmod(np.arange(n_targets * n_demos, dtype=np.int64), n_targets)
    return i, j


def top_k_neighbours(
    queries: np.ndarray,
    candidates: np.ndarray,
    k: int,
    exclude: np.ndarray | None = None,
) -> np.ndarray:
    """Exact top-k candidates by cosine (rows are unit vectors), shape (len(queries), k).

    With `exclude`, query row r never has candidate exclude[r] (itself) as a neighbour.
    Neighbours come most similar first, equal similarities by lower candidate index; the result
    is deterministic for the same inputs.
    """
    sims = np.asarray(queries, np.float32) @ np.asarray(candidates, np.float32).T
    if exclude is not None:
        sims[np.arange(len(queries)), exclude] = -np.inf
    if k < sims.shape[1]:
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    else:
        top = np.broadcast_to(np.arange(sims.shape[1]), sims.shape).copy()
    top_sims = np.take_along_axis(sims, top, axis=1)
    order = np.lexsort((top, -top_sims), axis=1)
    return np.take_along_axis(top, order, axis=1).astype(np.int64)


def check_k(k: int, n_candidates: int, same_set: bool) -> None:
    """ConfigError unless each target can have k neighbours other than itself."""
    limit = n_candidates - 1 if same_set else n_candidates
    if k < 1:
        raise ConfigError(f"config: pairs.k must be >= 1, got {k}")
    if k > limit:
        raise ConfigError(
            f"config: pairs.k={k} needs more than the {n_candidates} candidates available; "
            "lower pairs.k or use pairs.mode=dense for small pools"
        )


def row_blocks(rows: np.ndarray, block_rows: int) -> list[np.ndarray]:
    """`rows` cut into consecutive blocks of at most block_rows rows."""
    return [rows[s : s + block_rows] for s in range(0, len(rows), block_rows)]


def block_neighbours(
    target_emb: np.ndarray, demo_emb: np.ndarray, k: int, same_set: bool, rows: np.ndarray
) -> np.ndarray:
    """Top-k neighbours of the target rows `rows` (each excluding itself when same_set)."""
    return top_k_neighbours(target_emb[rows], demo_emb, k, rows if same_set else None)


def exact_neighbours(
    target_emb: np.ndarray,
    demo_emb: np.ndarray,
    k: int,
    same_set: bool,
    rows: np.ndarray | None = None,
    block_rows: int = 4096,
    map_fn: MapFn = local_map,
) -> np.ndarray:
    """Exact top-k neighbours, shape (len(rows), k), of the target rows `rows` (default all);
    the blocks of rows are searched by `map_fn` (in-process, or Ray tasks for large pools).
    A block has at most `block_rows` rows and SIMS_PER_BLOCK similarities."""
    check_k(k, len(demo_emb), same_set)
    if rows is None:
        rows = np.arange(len(target_emb), dtype=np.int64)
    block_rows = max(1, min(block_rows, SIMS_PER_BLOCK // max(len(demo_emb), 1)))
    search = partial(_search_block, k=k, same_set=same_set)
    embeddings = {"targets": target_emb, "demos": demo_emb}
    parts = map_fn(search, row_blocks(rows, block_rows), embeddings)
    return np.concatenate(parts) if parts else np.empty((0, k), np.int64)


def neighbour_pairs(nbrs: np.ndarray, same_set: bool) -> tuple[np.ndarray, np.ndarray]:
    """(i, j) pairs from a (n, k) neighbour table, plus (i, i) when same_set, grouped by j."""
    n, k = nbrs.shape
    i = np.repeat(np.arange(n, dtype=np.int64), k)
    j = nbrs.reshape(-1).astype(np.int64)
    if same_set:
        i = np.concatenate([i, np.arange(n, dtype=np.int64)])
        j = np.concatenate([j, np.arange(n, dtype=np.int64)])
    order = np.lexsort((i, j))
    return i[order], j[order]


def knn_pairs(
    target_emb: np.ndarray,
    demo_emb: np.ndarray,
    k: int,
    same_set: bool,
    block_rows: int = 4096,
    map_fn: MapFn = local_map,
) -> tuple[np.ndarray, np.ndarray]:
    """Each target's k nearest demonstrations by exact search (plus itself when both sets are
    the same), grouped by demonstration."""
    nbrs = exact_neighbours(target_emb, demo_emb, k, same_set, None, block_rows, map_fn)
    return neighbour_pairs(nbrs, same_set)


def _search_block(
    rows: np.ndarray, targets: np.ndarray, demos: np.ndarray, k: int, same_set: bool
) -> np.ndarray:
    return block_neighbours(targets, demos, k, same_set, rows)


def random_pairs(
    n_targets: int, n_demos: int, per_target: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """`per_target` uniformly random demonstrations for each target (seeded; may repeat knn's)."""
    rng = np.random.default_rng(seed)
    i = np.repeat(np.arange(n_targets, dtype=np.int64), per_target)
    return i, rng.integers(0, n_demos, len(i), dtype=np.int64)


def union_pairs(*pairs: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (i, j) of several pair sets, grouped by demonstration j."""
    i = np.concatenate([p[0] for p in pairs])
    j = np.concatenate([p[1] for p in pairs])
    width = int(i.max()) + 1 if len(i) else 1
    keys = np.unique(j * width + i)
    return keys % width, keys // width
