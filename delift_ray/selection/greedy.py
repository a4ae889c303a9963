"""Greedy maximisation of a monotone submodular objective under a cardinality budget.

Every optimizer breaks ties the same way: among equal gains the smallest candidate index wins,
so naive and lazy greedy return identical picks and gains.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from delift_ray.errors import DeliftError
from delift_ray.progress import ProgressFn
from delift_ray.selection.objectives import Objective, State, column_gain, compiled, cover

PROGRESS_CALLS = 100  # lazy greedy leaves its compiled loop this many times to report progress


@dataclass
class Selection:
    """A greedy selection: picks in order, their gains, f after each pick and a bound on OPT."""

    indices: np.ndarray  # int64 candidate (column) indices, in greedy order
    gains: np.ndarray  # marginal gain of each pick when it was made
    objective: np.ndarray  # f after each pick: the running sum of gains
    value: float  # f of the final selection, recomputed from its coverage
    upper_bound: float  # f(A) + the budget largest gains w.r.t. A: f(OPT) <= this
    optimizer: str
    evaluations: int  # single-candidate gain evaluations while selecting (not the bound's pass)


def _ground_set(
    obj: Objective, budget: int, candidates: Sequence[int] | np.ndarray | None
) -> np.ndarray:
    """Sorted candidate indices after validating candidates and budget."""
    if candidates is None:
        ground = np.arange(obj.n_candidates, dtype=np.int64)
    else:
        given = np.asarray(candidates)
        if given.size and not np.issubdtype(given.dtype, np.integer):
            raise DeliftError(f"candidates must be integer column indices, got dtype {given.dtype}")
        ground = np.unique(given.astype(np.int64).reshape(-1))
        if len(ground) != given.size:
            raise DeliftError("candidates contain duplicate indices")
        if len(ground) and (ground[0] < 0 or ground[-1] >= obj.n_candidates):
            raise DeliftError(
                f"candidates must lie in [0, {obj.n_candidates}), got {ground[0]}..{ground[-1]}"
            )
    if isinstance(budget, bool) or not isinstance(budget, int | np.integer) or budget < 1:
        raise DeliftError(f"budget must be an integer >= 1, got {budget!r}")
    if budget > len(ground):
        raise DeliftError(f"budget {budget} exceeds the {len(ground)} candidates")
    return ground


def finish_selection(
    obj: Objective,
    state: State,
    ground: np.ndarray,
    picks: list[int] | np.ndarray,
    gains: list[float] | np.ndarray,
    optimizer: str,
    evaluations: int,
) -> Selection:
    """Package the picks and compute the online upper bound f(A) + top-b gains w.r.t. A."""
    indices = np.asarray(picks, dtype=np.int64)
    value = obj.value(state)
    rest = ground[~np.isin(ground, indices)]
    budget = len(indices)
    rest_gains = obj.gains(state, rest)
    if len(rest_gains) > budget:
        rest_gains = np.partition(rest_gains, len(rest_gains) - budget)[-budget:]
    gain_array = np.asarray(gains, dtype=np.float64)
    return Selection(
        indices=indices,
        gains=gain_array,
        objective=np.cumsum(gain_array),  # f(empty set) = 0 for FL, FLMI and FLCG
        value=value,
        upper_bound=value + float(rest_gains.sum()),
        optimizer=optimizer,
        evaluations=evaluations,
    )


def naive_greedy(
    obj: Objective,
    budget: int,
    candidates: Sequence[int] | np.ndarray | None = None,
    progress: ProgressFn | None = None,
) -> Selection:
    """Plain greedy: re-evaluate every remaining candidate at every step."""
    remaining = _ground_set(obj, budget, candidates)
    ground = remaining
    state = obj.new_state()
    picks: list[int] = []
    gains: list[float] = []
    evaluations = 0
    for step in range(budget):
        g = obj.gains(state, remaining)
        evaluations += len(remaining)
        k = int(np.argmax(g))  # first maximum = smallest index, as remaining is sorted
        j = int(remaining[k])
        obj.add(state, j)
        picks.append(j)
        gains.append(float(g[k]))
        remaining = np.delete(remaining, k)
        if progress is not None:
            progress(step + 1, budget)
    return finish_selection(obj, state, ground, picks, gains, "naive", evaluations)


def lazy_greedy(
    obj: Objective,
    budget: int,
    candidates: Sequence[int] | np.ndarray | None = None,
    progress: ProgressFn | None = None,
) -> Selection:
    """Lazy greedy (Minoux 1978): a max-heap of stale gains, which only ever shrink; a stale
    top is re-evaluated in place, and a fresh top is picked. The loop is compiled (numba)."""
    ground = _ground_set(obj, budget, candidates)
    state = obj.new_state()
    keys = obj.gains(state, ground)  # the heap: gains, their candidates, the step they are for
    ids = ground.copy()
    stamps = np.zeros(len(ground), dtype=np.int64)
    _heapify(keys, ids, stamps)
    picks = np.empty(budget, dtype=np.int64)
    gains = np.empty(budget, dtype=np.float64)
    size, evaluations = len(ground), len(ground)
    chunk = max(1, budget // PROGRESS_CALLS)
    for start in range(0, budget, chunk):
        stop = min(start + chunk, budget)
        size, done = _lazy_steps(
            *obj.arrays, obj.weights, state.c, keys, ids, stamps, size, start, stop, picks, gains
        )
        evaluations += done
        if progress is not None:
            progress(stop, budget)
    for j in picks.tolist():  # the modular term of the picks, summed in pick order as add() does
        state.bonus += float(obj.weights[j])
    return finish_selection(obj, state, ground, picks, gains, "lazy", evaluations)


@compiled
def _above(keys: np.ndarray, ids: np.ndarray, a: int, b: int) -> bool:
    """Heap order: the larger gain first, and among equal gains the smaller candidate index."""
    return keys[a] > keys[b] or (keys[a] == keys[b] and ids[a] < ids[b])


@compiled
def _sift_down(keys: np.ndarray, ids: np.ndarray, stamps: np.ndarray, pos: int, size: int) -> None:
    """Move the entry at pos down until neither child sorts above it."""
    while True:
        best, left = pos, 2 * pos + 1
        if left < size and _above(keys, ids, left, best):
            best = left
        if left + 1 < size and _above(keys, ids, left + 1, best):
            best = left + 1
        if best == pos:
            return
        keys[pos], keys[best] = keys[best], keys[pos]
        ids[pos], ids[best] = ids[best], ids[pos]
        stamps[pos], stamps[best] = stamps[best], stamps[pos]
        pos = best


@compiled
def _heapify(keys: np.ndarray, ids: np.ndarray, stamps: np.ndarray) -> None:
    """Arrange the three parallel arrays as a binary max-heap in _above's order."""
    for pos in range(len(keys) // 2 - 1, -1, -1):
        _sift_down(keys, ids, stamps, pos, len(keys))


@compiled
def _lazy_steps(
    indptr: np.ndarray,
    rows: np.ndarray,
    data: np.ndarray,
    weights: np.ndarray,
    c: np.ndarray,
    keys: np.ndarray,
    ids: np.ndarray,
    stamps: np.ndarray,
    size: int,
    start: int,
    stop: int,
    picks: np.ndarray,
    gains: np.ndarray,
) -> tuple[int, int]:
    """Greedy steps start..stop-1 on the heap; returns its new size and the gains evaluated."""
    evaluations = 0
    for step in range(start, stop):
        # A fresh top is the exact argmax with the tie rule: every other candidate's gain is
        # <= its stale key, which sorts at or below the top.
        while stamps[0] != step:
            keys[0] = column_gain(indptr, rows, data, c, ids[0]) + weights[ids[0]]
            stamps[0] = step
            evaluations += 1
            _sift_down(keys, ids, stamps, 0, size)
        picks[step], gains[step] = ids[0], keys[0]
        cover(indptr, rows, data, c, ids[0])
        size -= 1
        keys[0], ids[0], stamps[0] = keys[size], ids[size], stamps[size]
        _sift_down(keys, ids, stamps, 0, size)
    return size, evaluations


def stochastic_greedy(
    obj: Objective,
    budget: int,
    epsilon: float = 0.01,
    seed: int = 0,
    candidates: Sequence[int] | np.ndarray | None = None,
    progress: ProgressFn | None = None,
) -> Selection:
    """Stochastic greedy (Mirzasoleiman et al. 2015): best of a random sample at each step."""
    if not 0 < epsilon < 1:
        raise DeliftError(f"epsilon must be in (0, 1), got {epsilon}")
    ground = _ground_set(obj, budget, candidates)
    remaining = ground.copy()
    n_left = len(remaining)
    sample_size = max(1, math.ceil(len(ground) / budget * math.log(1 / epsilon)))
    rng = np.random.default_rng(seed)
    state = obj.new_state()
    picks: list[int] = []
    gains: list[float] = []
    evaluations = 0
    for step in range(budget):
        positions = rng.choice(n_left, size=min(sample_size, n_left), replace=False)
        sample = remaining[positions]
        g = obj.gains(state, sample)
        evaluations += len(sample)
        ties = np.flatnonzero(g == g.max())
        k = ties[np.argmin(sample[ties])]
        j = int(sample[k])
        obj.add(state, j)
        picks.append(j)
        gains.append(float(g[k]))
        n_left -= 1
        remaining[positions[k]] = remaining[n_left]  # swap-remove keeps sampling O(sample)
        if progress is not None:
            progress(step + 1, budget)
    return finish_selection(obj, state, ground, picks, gains, "stochastic", evaluations)


def greedy(
    obj: Objective,
    budget: int,
    optimizer: str = "lazy",
    epsilon: float = 0.01,
    seed: int = 0,
    candidates: Sequence[int] | np.ndarray | None = None,
    progress: ProgressFn | None = None,
) -> Selection:
    """Select exactly budget candidates with the named optimizer: naive, lazy or stochastic."""
    if optimizer == "naive":
        return naive_greedy(obj, budget, candidates=candidates, progress=progress)
    if optimizer == "lazy":
        return lazy_greedy(obj, budget, candidates=candidates, progress=progress)
    if optimizer == "stochastic":
        return stochastic_greedy(
            obj, budget, epsilon, seed, candidates=candidates, progress=progress
        )
    raise DeliftError(f"optimizer must be one of naive, lazy, stochastic; got {optimizer!r}")
