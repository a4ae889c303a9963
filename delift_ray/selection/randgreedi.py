"""Distributed greedy: RandGreeDi (Barbosa et al. 2015), and central-or-not dispatch.

Round 1: candidates are split into m parts (`partition`) and each part runs greedy on its own
(`part_greedy`), receiving only that part's kernel columns, their modular weights and the
objective's per-row floor.
Round 2 (`merge`): greedy over the union of the parts' picks with the full objective, keeping
the better of that and the best part's own solution. Expected guarantee (1 - 1/e) / 2 of the
optimum. The parts run through a map function: in-process by default (`local_map`), or one Ray
task each when the caller passes the task map from delift_ray.distributed.maps.

Candidate j goes to part blake2b(f"{seed}:{ids[j]}") mod m, so the picks depend on the ids, the
seed and m only: not on the cluster or which worker ran which part, nor on the order of the ids
(except that exact ties go to the smaller index, as in central greedy). For the same reason the
automatic m ignores the cluster's CPUs: it is round(sqrt(n / budget)) in [2, 64], which makes a
part (n / m candidates) and the driver's union (m * budget) about equally large.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from functools import partial

import numpy as np
import scipy.sparse as sp

from delift_ray.config import SelectionConfig
from delift_ray.errors import DeliftError
from delift_ray.map_fn import MapFn, local_map
from delift_ray.progress import ProgressFn
from delift_ray.selection.greedy import Selection, finish_selection, greedy
from delift_ray.selection.objectives import Objective

MODES = ("auto", "central", "randgreedi")
MAX_PARTS = 64


def auto_parts(n: int, budget: int) -> int:
    """Automatic part count: round(sqrt(n / budget)), clamped to [2, 64]."""
    return min(MAX_PARTS, max(2, round(math.sqrt(n / budget))))


def partition(ids: Sequence[str], parts: int, seed: int) -> np.ndarray:
    """Part of each candidate: the first 8 bytes of blake2b(f"{seed}:{id}"), mod parts."""
    digests = (hashlib.blake2b(f"{seed}:{i}".encode(), digest_size=8).digest() for i in ids)
    return np.fromiter((int.from_bytes(d, "big") % parts for d in digests), np.int64, len(ids))


def _check(obj: Objective, budget: int, ids: Sequence[str]) -> None:
    """One id per candidate and 1 <= budget <= n, before any part runs."""
    n = obj.n_candidates
    if len(ids) != n:
        raise DeliftError(f"got {len(ids)} ids for {n} candidates")
    if isinstance(budget, bool) or not isinstance(budget, int | np.integer) or budget < 1:
        raise DeliftError(f"budget must be an integer >= 1, got {budget!r}")
    if budget > n:
        raise DeliftError(f"budget {budget} exceeds the {n} candidates")


def part_greedy(
    part: tuple[sp.csc_array, np.ndarray],
    floor: np.ndarray,
    name: str,
    budget: int,
    optimizer: str,
    epsilon: float,
    seed: int,
) -> tuple[np.ndarray, int]:
    """Greedy on one part's (columns, modular weights) alone (all of them if fewer than budget):
    picks, evaluations."""
    columns, weights = part
    obj = Objective(columns, floor=floor, name=name, weights=weights)
    sel = greedy(obj, min(budget, obj.n_candidates), optimizer, epsilon, seed)
    return sel.indices, sel.evaluations


def merge(
    obj: Objective,
    budget: int,
    members: Sequence[np.ndarray],
    results: Sequence[tuple[np.ndarray, int]],
    optimizer: str = "lazy",
    epsilon: float = 0.01,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> Selection:
    """Round 2: greedy over the union of the parts' picks (`results` of part_greedy on the
    candidates `members`), or the best part if better; replayed on the full objective."""
    local = [c[picks] for c, (picks, _) in zip(members, results, strict=True)]
    union = greedy(obj, budget, optimizer, epsilon, seed, np.concatenate(local), progress)
    evaluations = union.evaluations + sum(evals for _, evals in results)
    winner = union.indices
    # Only a part that filled the whole budget competes: the result has exactly budget picks.
    best = max((p for p in local if len(p) == budget), key=obj.evaluate, default=None)
    if best is not None and obj.evaluate(best) > union.value:
        winner = best
    return _replay(obj, winner, evaluations)


def _replay(obj: Objective, picks: np.ndarray, evaluations: int) -> Selection:
    """Picks in order on the full objective: gains, value and the bound over all candidates."""
    state = obj.new_state()
    gains: list[float] = []
    for j in picks.tolist():
        gains.append(obj.gain(state, j))  # bit-identical to the gain greedy recorded
        obj.add(state, j)
    ground = np.arange(obj.n_candidates, dtype=np.int64)
    return finish_selection(obj, state, ground, picks.tolist(), gains, "randgreedi", evaluations)


def randgreedi(
    obj: Objective,
    budget: int,
    ids: Sequence[str],
    parts: int = 0,
    seed: int = 0,
    optimizer: str = "lazy",
    epsilon: float = 0.01,
    progress: ProgressFn | None = None,
    map_fn: MapFn = local_map,
) -> Selection:
    """RandGreeDi with the parts run by `map_fn` (parts = 0: automatic); indices are obj's
    candidate indices."""
    _check(obj, budget, ids)
    if isinstance(parts, bool) or not isinstance(parts, int) or parts < 0:
        raise DeliftError(f"parts must be an integer >= 0 (0 = automatic), got {parts!r}")
    m = parts or auto_parts(obj.n_candidates, budget)
    labels = partition(ids, m, seed)
    members = [c for c in (np.flatnonzero(labels == p) for p in range(m)) if len(c)]
    one_part = partial(
        part_greedy, name=obj.name, budget=budget, optimizer=optimizer, epsilon=epsilon, seed=seed
    )
    parts_ = [(obj.columns(c), obj.weights[c]) for c in members]
    results = map_fn(one_part, parts_, {"floor": obj.floor})
    return merge(obj, budget, members, results, optimizer, epsilon, seed, progress)


def select(
    obj: Objective,
    budget: int,
    ids: Sequence[str],
    mode: str = "auto",
    parts: int = 0,
    seed: int = 0,
    central_max_nonzeros: int = SelectionConfig.central_max_nonzeros,
    optimizer: str = "lazy",
    epsilon: float = 0.01,
    progress: ProgressFn | None = None,
    map_fn: MapFn = local_map,
) -> Selection:
    """Central greedy, or RandGreeDi when asked (or, for auto, when the kernel is too big) with
    its parts run by `map_fn`."""
    if mode not in MODES:
        raise DeliftError(f"distributed mode must be one of {', '.join(MODES)}; got {mode!r}")
    _check(obj, budget, ids)
    if mode == "randgreedi" or (mode == "auto" and obj.nnz > central_max_nonzeros):
        return randgreedi(obj, budget, ids, parts, seed, optimizer, epsilon, progress, map_fn)
    return greedy(obj, budget, optimizer, epsilon, seed, progress=progress)
