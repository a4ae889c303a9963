"""From raw utilities to similarity kernels (SPEC §4): one global scaling per kernel.

Layout: rows = the point being represented (target i), columns = candidate j. Pairs that were
not scored are 0. Raw d0, d1 and U are kept elsewhere; scaling happens only here.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp

Scaling = Literal["minmax", "clip"]


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


def utility_kernel(
    rows: np.ndarray,
    cols: np.ndarray,
    u: np.ndarray,
    shape: tuple[int, int],
    scaling: Scaling,
) -> sp.csr_matrix:
    """A CSR kernel holding the scaled utilities at (rows, cols); unscored pairs are 0."""
    k = scale_utilities(u, scaling).astype(np.float32)
    return sp.csr_matrix((k, (np.asarray(rows), np.asarray(cols))), shape=shape)


def cosine_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """DELIFT-SE kernel (cos + 1) / 2 between rows of a (represented) and rows of b (candidates)."""
    a = _unit_rows(a)
    b = _unit_rows(b)
    return ((a @ b.T + 1.0) / 2.0).clip(0.0, 1.0)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1.0, norms)
