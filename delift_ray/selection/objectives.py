"""Facility-location objectives (FL, FLMI, FLCG) over a sparse or dense kernel.

K[i, j] says how well candidate j represents target i (rows = targets, columns = candidates);
unscored pairs are 0. With c_i = max over selected j of K[i, j] (0 for the empty set):

- FL:   f(A) = sum_i c_i
- FLMI: f(A) = sum_i min(c_i, eta * q_i),        q_i = max_q Q[i, q]
- FLCG: f(A) = sum_i max(c_i - nu * p_i, 0),     p_i = max_k P[i, k]

Each may add a modular term (the `selection.modular` variant): f(A) + sum_{j in A} w_j with
w_j = modular * m_j >= 0 (m_j: demonstration j's mean kernel value, kernels.demonstration_means);
a non-negative modular term keeps f monotone submodular, so every optimizer and the bound stay
exact, and each gain is the facility-location gain plus w_j.

All three are one function: facility location on the row-capped kernel min(K[i, j], cap_i)
whose running max starts at floor_i, minus sum(floor_i). FL has cap = inf, floor = 0; FLMI has
cap = eta * q (min(max(c, K), cap) = max(min(c, cap), min(K, cap))); FLCG has floor = nu * p
(max(c - t, 0) = max(c, t) - t).

Gains and coverage updates are numba-compiled loops over a column's stored entries (summed in
storage order); greedy.py's compiled lazy loop calls the same ones, so every optimizer sees
bit-identical gains.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

import numba
import numpy as np
import scipy.sparse as sp

from delift_ray.errors import DeliftError

Kernel: TypeAlias = np.ndarray | sp.spmatrix | sp.sparray
F = TypeVar("F", bound=Callable[..., Any])


def compiled(fn: F) -> F:
    """numba's njit, its machine code cached on disk where numba finds a writable place."""
    try:
        # numba tries NUMBA_CACHE_DIR, then __pycache__ next to the module, then the user's
        # cache directory (~/.cache/numba); it raises RuntimeError when none is writable.
        return numba.njit(cache=True)(fn)  # type: ignore[return-value]
    except RuntimeError:  # a read-only install and home: compile in every process instead
        return numba.njit(fn)  # type: ignore[return-value]


@compiled
def column_gain(
    indptr: np.ndarray, rows: np.ndarray, data: np.ndarray, c: np.ndarray, j: int
) -> float:
    """sum_i max(K[i, j] - c_i, 0) over column j's stored entries, in storage order."""
    total = 0.0
    for p in range(indptr[j], indptr[j + 1]):
        term = data[p] - c[rows[p]]
        if term > 0.0:
            total += term
    return total


@compiled
def _column_gains(
    indptr: np.ndarray,
    rows: np.ndarray,
    data: np.ndarray,
    c: np.ndarray,
    js: np.ndarray,
    weights: np.ndarray,
) -> np.ndarray:
    out = np.empty(len(js), dtype=np.float64)
    for k in range(len(js)):
        out[k] = column_gain(indptr, rows, data, c, js[k]) + weights[js[k]]
    return out


@compiled
def cover(indptr: np.ndarray, rows: np.ndarray, data: np.ndarray, c: np.ndarray, j: int) -> None:
    """c_i = max(c_i, K[i, j]) over column j's stored entries, in place."""
    for p in range(indptr[j], indptr[j + 1]):
        if data[p] > c[rows[p]]:
            c[rows[p]] = data[p]


@dataclass
class State:
    """Running per-row coverage c_i of a growing selection (starts at the objective's floor)
    and the sum of the selection's modular weights."""

    c: np.ndarray
    bonus: float = 0.0


def _check_values(values: np.ndarray, name: str) -> None:
    """Reject NaN, inf and negative entries with a one-line DeliftError."""
    if not np.isfinite(values).all():
        raise DeliftError(f"{name} has NaN or inf entries")
    if values.size and values.min() < 0:
        raise DeliftError(f"{name} has negative entries (min {values.min():.4g}); kernels are >= 0")


def _as_csc(K: Kernel, name: str) -> sp.csc_array:
    """Validate a 2-D non-negative finite kernel and return it as canonical float64 CSC."""
    if not sp.issparse(K):
        dense = np.asarray(K, dtype=np.float64)
        if dense.ndim != 2:
            raise DeliftError(f"{name} must be a 2-D matrix, got shape {dense.shape}")
        M = sp.csc_array(dense)
    elif isinstance(K, sp.csc_array) and K.dtype == np.float64:
        M = K
    else:
        M = sp.csc_array(K, dtype=np.float64)
    M.sum_duplicates()
    if 0 in M.shape:
        raise DeliftError(f"{name} is empty (shape {M.shape})")
    _check_values(M.data, name)
    return M


def _row_max(M: Kernel, n_rows: int, name: str) -> np.ndarray:
    """Per-row max of a cross kernel whose rows must match K's rows."""
    C = _as_csc(M, name).tocsr()
    if C.shape[0] != n_rows:
        raise DeliftError(f"{name} has {C.shape[0]} rows but the kernel K has {n_rows}")
    return np.asarray(C.max(axis=1).toarray(), dtype=np.float64).reshape(-1)


def _segment_positions(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Flat positions of the concatenated segments [start, start + length)."""
    offsets = np.cumsum(lengths) - lengths
    return np.arange(int(lengths.sum())) + np.repeat(starts - offsets, lengths)


def _check_scale(value: float, name: str) -> float:
    """A finite, non-negative scalar parameter (eta, nu)."""
    if not np.isfinite(value) or value < 0:
        raise DeliftError(f"{name} must be a finite number >= 0, got {value}")
    return float(value)


class Objective:
    """Facility location on min(K, cap) with running max starting at floor, minus sum(floor)."""

    def __init__(
        self,
        K: Kernel,
        cap: np.ndarray | None = None,
        floor: np.ndarray | None = None,
        name: str = "fl",
        weights: np.ndarray | None = None,
    ) -> None:
        M = _as_csc(K, "kernel K")
        self.name = name
        self.n_rows, self.n_candidates = (int(d) for d in M.shape)
        for label, values, n in (
            ("cap", cap, self.n_rows),
            ("floor", floor, self.n_rows),
            ("weights", weights, self.n_candidates),
        ):
            if values is not None:
                if values.shape != (n,):
                    raise DeliftError(f"{label} must have shape ({n},)")
                _check_values(values, label)
        self._indptr = M.indptr.astype(np.int64)
        self._rows = M.indices
        self._data = M.data if cap is None else np.minimum(M.data, cap[self._rows])
        self._floor = np.zeros(self.n_rows) if floor is None else floor.astype(np.float64)
        w = np.zeros(self.n_candidates) if weights is None else weights
        self._weights = np.ascontiguousarray(w, dtype=np.float64)

    @property
    def floor(self) -> np.ndarray:
        """The per-row starting coverage (nu * p for FLCG, else 0); do not modify."""
        return self._floor

    @property
    def weights(self) -> np.ndarray:
        """The per-candidate modular weights w_j (zeros without a modular term); do not modify."""
        return self._weights

    @property
    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The capped kernel as CSC (indptr int64, row indices, data float64); do not modify."""
        return self._indptr, self._rows, self._data

    @property
    def nnz(self) -> int:
        """Stored kernel entries."""
        return len(self._data)

    @property
    def nbytes(self) -> int:
        """Bytes held by the kernel arrays and the floor."""
        arrays = (self._indptr, self._rows, self._data, self._floor, self._weights)
        return sum(a.nbytes for a in arrays)

    def columns(self, js: np.ndarray | Sequence[int]) -> sp.csc_array:
        """Capped columns js as CSC; Objective(them, floor=self.floor, weights=self.weights[js])
        is self restricted to js."""
        js = np.asarray(js, dtype=np.int64).reshape(-1)
        starts = self._indptr[js]
        lengths = self._indptr[js + 1] - starts
        pos = _segment_positions(starts, lengths)
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(self._rows.dtype)
        shape = (self.n_rows, len(js))
        return sp.csc_array((self._data[pos], self._rows[pos], indptr), shape=shape)

    def new_state(self) -> State:
        """Coverage of the empty selection."""
        return State(c=self._floor.copy())

    def gains(self, state: State, js: np.ndarray | Sequence[int]) -> np.ndarray:
        """Marginal gain of each candidate in js; bit-identical whether js holds one or many."""
        js = np.asarray(js, dtype=np.int64).reshape(-1)
        if js.size and (js.min() < 0 or js.max() >= self.n_candidates):
            raise DeliftError(f"candidate indices must lie in [0, {self.n_candidates})")
        arrays = (self._indptr, self._rows, self._data)
        return _column_gains(*arrays, state.c, js, self._weights)  # type: ignore[return-value]

    def gain(self, state: State, j: int) -> float:
        """Marginal gain of one candidate: the same arithmetic as gains()."""
        return float(self.gains(state, [j])[0])

    def add(self, state: State, j: int) -> None:
        """Add candidate j to the selection held by state, in place."""
        if not 0 <= j < self.n_candidates:
            raise DeliftError(f"candidate index must lie in [0, {self.n_candidates}), got {j}")
        cover(self._indptr, self._rows, self._data, state.c, j)
        state.bonus += float(self._weights[j])

    def value(self, state: State) -> float:
        """f of the selection held by state."""
        return float(np.sum(state.c - self._floor)) + state.bonus

    def evaluate(self, selected: Sequence[int] | np.ndarray) -> float:
        """f of a set of candidate indices, from scratch."""
        state = self.new_state()
        for j in np.asarray(selected, dtype=np.int64).reshape(-1):
            self.add(state, int(j))
        return self.value(state)


def facility_location(K: Kernel, weights: np.ndarray | None = None) -> Objective:
    """FL: f(A) = sum_i max_{j in A} K[i, j] (+ sum_{j in A} weights_j)."""
    return Objective(K, name="fl", weights=weights)


def fl_mutual_information(
    K: Kernel, Q: Kernel, eta: float = 1.0, weights: np.ndarray | None = None
) -> Objective:
    """FLMI: f(A) = sum_i min(max_{j in A} K[i, j], eta * max_q Q[i, q]) (+ sum_{j in A} w_j)."""
    eta = _check_scale(eta, "eta")
    M = _as_csc(K, "kernel K")
    cap = eta * _row_max(Q, M.shape[0], "target kernel Q")
    return Objective(M, cap=cap, name="flmi", weights=weights)


def fl_conditional_gain(
    K: Kernel, P: Kernel, nu: float = 1.0, weights: np.ndarray | None = None
) -> Objective:
    """FLCG: f(A) = sum_i max(max_{j in A} K[i, j] - nu * max_k P[i, k], 0) (+ sum_{j in A} w_j)."""
    nu = _check_scale(nu, "nu")
    M = _as_csc(K, "kernel K")
    floor = nu * _row_max(P, M.shape[0], "existing-data kernel P")
    return Objective(M, floor=floor, name="flcg", weights=weights)
