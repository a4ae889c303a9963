"""RandGreeDi: quality vs central greedy, determinism, partition, dispatch; in-process, and its
parts as Ray tasks on a real local Ray."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from delift_ray.distributed.maps import task_map
from delift_ray.errors import DeliftError
from delift_ray.selection.greedy import lazy_greedy
from delift_ray.selection.objectives import (
    Objective,
    facility_location,
    fl_conditional_gain,
    fl_mutual_information,
)
from delift_ray.selection.randgreedi import auto_parts, partition, randgreedi, select

N, PER_COLUMN, BUDGET = 20_000, 48, 200


def sparse_kernel(n: int, per_column: int, seed: int = 0) -> sp.csc_array:
    """n x n kernel with about per_column uniform entries in each column plus a unit diagonal."""
    rng = np.random.default_rng(seed)
    rows = np.concatenate([rng.integers(0, n, n * per_column), np.arange(n)])
    cols = np.concatenate([np.repeat(np.arange(n), per_column), np.arange(n)])
    vals = np.concatenate([rng.random(n * per_column), np.ones(n)])
    return sp.csc_array((vals, (rows, cols)), shape=(n, n))


@pytest.fixture(scope="module")
def kernel() -> sp.csc_array:
    """The 20k x 20k test kernel."""
    return sparse_kernel(N, PER_COLUMN)


@pytest.fixture(scope="module")
def ids() -> list[str]:
    """Candidate ids, as the pipeline's content hashes would be: opaque strings."""
    return [f"ex-{j:06d}" for j in range(N)]


def objective(kind: str, K: sp.csc_array) -> Objective:
    """FL, or FLMI / FLCG with a random 60-column cross kernel."""
    if kind == "fl":
        return facility_location(K)
    cross = sp.random(K.shape[0], 60, density=0.05, format="csr", rng=1)
    if kind == "flmi":
        return fl_mutual_information(K, cross)
    return fl_conditional_gain(K, cross * 0.5)


@pytest.mark.parametrize("kind", ["fl", "flmi", "flcg"])
def test_close_to_central_with_sane_manifest_fields(kind: str, kernel, ids) -> None:
    obj = objective(kind, kernel)
    central = lazy_greedy(obj, BUDGET)
    dist = select(obj, BUDGET, ids, mode="randgreedi", seed=3)
    assert dist.optimizer == "randgreedi"
    assert len(dist.indices) == len(set(dist.indices.tolist())) == BUDGET
    assert dist.value >= 0.95 * central.value
    assert dist.value == pytest.approx(obj.evaluate(dist.indices), rel=1e-12)
    assert dist.objective[-1] == pytest.approx(dist.value, rel=1e-9)
    assert np.all(np.diff(dist.objective) >= 0)
    assert dist.upper_bound >= dist.value
    assert dist.upper_bound >= central.value  # a bound on OPT over all candidates
    assert dist.evaluations > 0


def test_same_seed_same_picks_other_seed_other_parts(kernel, ids) -> None:
    obj = facility_location(kernel)
    first = randgreedi(obj, BUDGET, ids, seed=7)
    again = randgreedi(obj, BUDGET, ids, seed=7)
    assert np.array_equal(first.indices, again.indices)
    assert np.array_equal(first.gains, again.gains)
    m = auto_parts(N, BUDGET)
    assert not np.array_equal(partition(ids, m, 7), partition(ids, m, 8))


def test_parts_as_ray_tasks_pick_what_the_in_process_map_picks(kernel, ids, ray_local) -> None:
    obj = fl_mutual_information(kernel, sp.random(N, 40, density=0.05, format="csr", rng=2))
    local = randgreedi(obj, BUDGET, ids, seed=5)
    on_ray = randgreedi(obj, BUDGET, ids, seed=5, map_fn=task_map)
    assert np.array_equal(on_ray.indices, local.indices)
    assert np.array_equal(on_ray.gains, local.gains)
    assert on_ray.evaluations == local.evaluations and on_ray.value == local.value


def test_partition_follows_ids_not_their_order(ids) -> None:
    perm = np.random.default_rng(0).permutation(N)
    shuffled = [ids[j] for j in perm]
    labels = partition(ids, 10, seed=5)
    assert np.array_equal(partition(shuffled, 10, seed=5), labels[perm])
    assert np.bincount(labels, minlength=10).min() > N / 10 * 0.9  # ten about even parts


def test_picks_follow_ids_not_column_order() -> None:
    n = 3000
    K = sparse_kernel(n, 16, seed=2)
    names = [f"row{j}" for j in range(n)]
    perm = np.random.default_rng(1).permutation(n)
    a = randgreedi(facility_location(K), 60, names, parts=4, seed=1)
    b = randgreedi(facility_location(K[:, perm]), 60, [names[j] for j in perm], parts=4, seed=1)
    assert [names[j] for j in a.indices] == [names[perm[j]] for j in b.indices]
    assert a.value == pytest.approx(b.value, rel=1e-12)


def test_one_part_equals_central_lazy_greedy(kernel, ids) -> None:
    obj = fl_conditional_gain(kernel, sp.random(N, 30, density=0.1, format="csr", rng=4))
    central = lazy_greedy(obj, BUDGET)
    one = randgreedi(obj, BUDGET, ids, parts=1)
    assert np.array_equal(one.indices, central.indices)
    assert np.array_equal(one.gains, central.gains)
    assert np.array_equal(one.objective, central.objective)
    assert one.value == central.value and one.upper_bound == central.upper_bound


def test_parts_smaller_than_budget_reduce_to_central() -> None:
    K = sparse_kernel(1000, 8, seed=3)
    obj = facility_location(K)
    dist = randgreedi(obj, 100, [str(j) for j in range(1000)], parts=64)
    assert np.array_equal(dist.indices, lazy_greedy(obj, 100).indices)


def test_best_part_wins_when_greedy_on_the_union_is_worse() -> None:
    # Greedy takes the spread-out candidate 0 first (2.4 > 2) and ends at 3.2; {1, 2} covers 4.
    K = np.array([[0.6, 1, 0], [0.6, 1, 0], [0.6, 0, 1], [0.6, 0, 1]])
    ids = ["spread", "left", "right"]
    seed = next(s for s in range(1000) if partition(ids, 2, s).tolist() in ([0, 1, 1], [1, 0, 0]))
    sel = randgreedi(facility_location(K), 2, ids, parts=2, seed=seed)
    assert sel.value == pytest.approx(4.0) and sorted(sel.indices.tolist()) == [1, 2]
    assert sel.gains.tolist() == [2.0, 2.0] and sel.upper_bound >= sel.value
    assert lazy_greedy(facility_location(K), 2).value == pytest.approx(3.2)


def test_auto_mode_dispatches_on_nonzeros(kernel, ids) -> None:
    obj = facility_location(kernel)
    assert select(obj, 50, ids, central_max_nonzeros=obj.nnz).optimizer == "lazy"
    assert select(obj, 50, ids, central_max_nonzeros=obj.nnz - 1).optimizer == "randgreedi"
    assert select(obj, 50, ids, mode="central", central_max_nonzeros=0).optimizer == "lazy"
    stochastic = select(obj, 50, ids, mode="randgreedi", optimizer="stochastic", epsilon=0.1)
    assert stochastic.optimizer == "randgreedi" and len(stochastic.indices) == 50


def test_auto_parts() -> None:
    assert auto_parts(200_000, 2_000) == 10
    assert auto_parts(1000, 300) == 2
    assert auto_parts(10**7, 10) == 64


@pytest.mark.parametrize(
    ("budget", "ids", "mode", "parts", "message"),
    [
        (5, ["a", "b", "c"], "randgreedi", 0, "exceeds the 3 candidates"),
        (0, ["a", "b", "c"], "randgreedi", 0, "budget must be an integer"),
        (2, ["a", "b"], "randgreedi", 0, "2 ids for 3 candidates"),
        (2, ["a", "b", "c"], "spread", 0, "distributed mode must be one of"),
        (2, ["a", "b", "c"], "randgreedi", -1, "parts must be an integer"),
        (5, ["a", "b", "c"], "central", 0, "exceeds the 3 candidates"),
    ],
)
def test_errors(budget: int, ids: list[str], mode: str, parts: int, message: str) -> None:
    with pytest.raises(DeliftError, match=message):
        select(facility_location(np.eye(3)), budget, ids, mode=mode, parts=parts)
