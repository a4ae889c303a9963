"""From raw utilities to similarity kernels (SPEC §4): one global scaling per kernel, or a
per-target normalisation (a variant), then an optional sharpening power.

Layout: rows = the point being represented (target i), columns = candidate j. Pairs that were
not scored are 0. Raw d0, d1 and U are kept elsewhere; scaling happens only here.

Per-target normalisations (`normalize`) work within each target row over that row's scored
pairs, in O(nnz log nnz) on the (row, column, utility) triplets, never dense:

- row_rank: (rank of u among the row's scored pairs, 0-based, ties averaged) / (count - 1), in
  [0, 1]; a row whose pairs all tie (a row with one pair included) is 0.5 everywhere.
- row_minmax: (u - min_row) / (max_row - min_row), in [0, 1]; a constant row is 0.
- row_z: max((u - mean_row) / std_row, 0) with the row's population std (ddof 0): a
  demonstration no better than the target's average counts as no help (like an unscored pair);
  a constant row is 0.

`sharpen` p >= 1 raises every kernel value to the power p after scaling (delays saturation).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp

Scaling = Literal["minmax", "clip"]
Normalize = Literal["none", "row_rank", "row_minmax", "row_z"]
NORMALIZE: tuple[Normalize, ...] = ("none", "row_rank", "row_minmax", "row_z")


def scale_utilities(u: np.ndarray, scaling: Scaling) -> np.ndarray:
    """Scale raw utilities into [0, ...): global min-max to [0, 1], or clip at 0 (`max(U, 0)`)."""
    u = np.asarray(u, dtype=np.float64)
    if scaling == "clip":
        return np.maximum(u, 0.0)
    if u.size == 0:
        return u.copy()
    lo, hi = float(u.min()), float(u.max())
    if hi == lo:  # a constant kernel carries no information
        return np.zeros_like(u)
    return (u - lo) / (hi - lo)


def normalize_rows(rows: np.ndarray, u: np.ndarray, how: Normalize) -> np.ndarray:
    """Per-target normalisation of utilities u at target rows `rows` (see the module's doc);
    the result is aligned with the input pairs."""
    u = np.asarray(u, dtype=np.float64).reshape(-1)
    rows = np.asarray(rows).reshape(-1)
    if how == "none":
        return u.copy()
    if how not in NORMALIZE:
        raise ValueError(f"normalize must be one of {', '.join(NORMALIZE)}; got {how!r}")
    if u.size == 0:
        return u.copy()
    if how == "row_rank":
        return _row_rank(rows, u)
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    starts = np.flatnonzero(np.r_[True, sorted_rows[1:] != sorted_rows[:-1]])
    counts = np.diff(np.r_[starts, len(u)])
    vals = u[order]
    if how == "row_minmax":
        lo = np.repeat(np.minimum.reduceat(vals, starts), counts)
        span = np.repeat(np.maximum.reduceat(vals, starts), counts) - lo
        out_sorted = np.where(span > 0, (vals - lo) / np.where(span > 0, span, 1.0), 0.0)
    else:  # row_z
        mean = np.repeat(np.add.reduceat(vals, starts) / counts, counts)
        dev = vals - mean
        std = np.repeat(np.sqrt(np.add.reduceat(dev * dev, starts) / counts), counts)
        out_sorted = np.where(std > 0, np.maximum(dev / np.where(std > 0, std, 1.0), 0.0), 0.0)
    out = np.empty_like(u)
    out[order] = out_sorted
    return out


def _row_rank(rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """(0-based average rank within the row) / (count - 1); 0.5 where the whole row ties."""
    order = np.lexsort((u, rows))  # by row, then by utility
    r, v = rows[order], u[order]
    n = len(u)
    row_start_flags = np.r_[True, r[1:] != r[:-1]]
    row_starts = np.flatnonzero(row_start_flags)
    row_counts = np.diff(np.r_[row_starts, n])
    row_id = np.cumsum(row_start_flags) - 1
    position = np.arange(n) - row_starts[row_id]  # 0-based position within the row
    group_flags = row_start_flags | np.r_[True, v[1:] != v[:-1]]
    group_starts = np.flatnonzero(group_flags)
    group_ends = np.r_[group_starts[1:], n] - 1  # last position (flat) of each tie group
    group_id = np.cumsum(group_flags) - 1
    first = position[group_starts][group_id]
    last = position[group_ends][group_id]
    rank = (first + last) / 2.0
    denom = (row_counts - 1)[row_id].astype(np.float64)
    out_sorted = np.where(denom > 0, rank / np.where(denom > 0, denom, 1.0), 0.5)
    out = np.empty(n, dtype=np.float64)
    out[order] = out_sorted
    return out


def kernel_values(
    rows: np.ndarray,
    u: np.ndarray,
    scaling: Scaling,
    normalize: Normalize = "none",
    sharpen: float = 1.0,
) -> np.ndarray:
    """Kernel values of the pairs: global scaling (or, if normalize is not none, the per-target
    normalisation instead), then raised to the power `sharpen`."""
    per_row = normalize != "none"
    k = normalize_rows(rows, u, normalize) if per_row else scale_utilities(u, scaling)
    return k if sharpen == 1.0 else np.power(k, float(sharpen))


def utility_kernel(
    rows: np.ndarray,
    cols: np.ndarray,
    u: np.ndarray,
    shape: tuple[int, int],
    scaling: Scaling,
    normalize: Normalize = "none",
    sharpen: float = 1.0,
) -> sp.csr_matrix:
    """A CSR kernel holding the pairs' kernel values (kernel_values) at (rows, cols); unscored
    pairs are 0, scored ones are stored even where their value is 0."""
    k = kernel_values(rows, u, scaling, normalize, sharpen).astype(np.float32)
    return sp.csr_matrix((k, (np.asarray(rows), np.asarray(cols))), shape=shape)


def demonstration_means(
    rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n_cols: int
) -> np.ndarray:
    """m_j: the mean kernel value of column j over the pairs scored with it, its own self pair
    (row == column) left out; 0 for a column with no such pair."""
    rows, cols = np.asarray(rows).reshape(-1), np.asarray(cols).reshape(-1)
    keep = rows != cols
    values = np.asarray(values, dtype=np.float64).reshape(-1)[keep]
    sums = np.bincount(cols[keep], weights=values, minlength=n_cols)
    counts = np.bincount(cols[keep], minlength=n_cols)
    return np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)


def cosine_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """DELIFT-SE kernel (cos + 1) / 2 between rows of a (represented) and rows of b (candidates)."""
    a = _unit_rows(a)
    b = _unit_rows(b)
    return ((a @ b.T + 1.0) / 2.0).clip(0.0, 1.0)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1.0, norms)
