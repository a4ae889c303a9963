"""Which (target i, demonstration j) pairs get scored: all of them, or each target's k nearest.

Pairs come back grouped by demonstration j, the order in which prefix sharing scores them.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from delift_ray.errors import ConfigError
from delift_ray.map_fn import MapFn, local_map


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


def row_blocks(n: int, block_rows: int) -> list[tuple[int, int]]:
    """(start, stop) of consecutive blocks of at most block_rows rows."""
    return [(s, min(s + block_rows, n)) for s in range(0, n, block_rows)]


def block_neighbours(
    target_emb: np.ndarray, demo_emb: np.ndarray, k: int, same_set: bool, start: int, stop: int
) -> np.ndarray:
    """Top-k neighbours of target rows start..stop (excluding themselves when same_set)."""
    offset = start if same_set else None
    return top_k_neighbours(target_emb[start:stop], demo_emb, k, offset)


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
    """Each target's k nearest demonstrations (plus itself when both sets are the same); the
    blocks of target rows are searched by `map_fn` (in-process, or Ray tasks for large pools)."""
    check_k(k, len(demo_emb), same_set)
    search = partial(_search_block, k=k, same_set=same_set)
    embeddings = {"targets": target_emb, "demos": demo_emb}
    parts = map_fn(search, row_blocks(len(target_emb), block_rows), embeddings)
    nbrs = np.concatenate(parts) if parts else np.empty((0, k), np.int64)
    return neighbour_pairs(nbrs, same_set)


def _search_block(
    block: tuple[int, int], targets: np.ndarray, demos: np.ndarray, k: int, same_set: bool
) -> np.ndarray:
    return block_neighbours(targets, demos, k, same_set, *block)


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
