"""Greedy optimizers: lazy == naive (tie rule included), guarantees, apricot parity, errors."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from delift_ray.errors import DeliftError
from delift_ray.selection.greedy import greedy, lazy_greedy, naive_greedy, stochastic_greedy
from delift_ray.selection.objectives import (
    Objective,
    facility_location,
    fl_conditional_gain,
    fl_mutual_information,
)

KINDS = ["fl", "flmi", "flcg"]


def random_kernel(rng: np.random.Generator, n_rows: int, n_cand: int, style: str):
    """Dense uniform, sparse CSR, or small integers (many exact ties) kernels."""
    if style == "dense":
        return rng.random((n_rows, n_cand))
    if style == "sparse":
        return sp.random(n_rows, n_cand, density=rng.uniform(0.05, 0.5), format="csr", rng=rng)
    return rng.integers(0, 3, (n_rows, n_cand)).astype(np.float64)


def make(kind: str, K, rng: np.random.Generator) -> Objective:
    """An objective of a kind, with a random cross kernel for FLMI / FLCG."""
    n_rows = K.shape[0]
    if kind == "fl":
        return facility_location(K)
    R = rng.integers(0, 3, (n_rows, 2)).astype(np.float64)
    if kind == "flmi":
        return fl_mutual_information(K, R)
    return fl_conditional_gain(K, R * 0.5)


def reference_greedy(K: np.ndarray, budget: int) -> list[int]:
    """FL greedy with python loops: a strictly larger gain is needed to beat a smaller index."""
    picks: list[int] = []
    cover = np.zeros(K.shape[0])
    for _ in range(budget):
        best, best_gain = -1, -1.0
        for j in range(K.shape[1]):
            gain = sum(max(K[i, j] - cover[i], 0.0) for i in range(K.shape[0]))
            if j not in picks and gain > best_gain:
                best, best_gain = j, gain
        picks.append(best)
        cover = np.maximum(cover, K[:, best])
    return picks


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("style", ["dense", "sparse", "integer"])
def test_lazy_picks_exactly_what_naive_picks(kind, style):
    rng = np.random.default_rng(list((kind + style).encode()))
    for _ in range(15):
        n_rows, n_cand = (int(x) for x in rng.integers(3, 50, 2))
        obj = make(kind, random_kernel(rng, n_rows, n_cand, style), rng)
        budget = int(rng.integers(1, n_cand + 1))
        naive, lazy = naive_greedy(obj, budget), lazy_greedy(obj, budget)
        assert np.array_equal(naive.indices, lazy.indices)
        assert np.array_equal(naive.gains, lazy.gains)
        assert naive.value == lazy.value
        assert naive.upper_bound == lazy.upper_bound


@pytest.mark.parametrize("kind", KINDS)
def test_compiled_lazy_picks_what_naive_picks_on_larger_sparse_kernels(kind):
    # Sparse kernels with a fixed number of scored rows per column, as the pipeline builds them,
    # large enough that the heap is deep and most tops go stale; integer-valued entries make
    # many exact ties, which the heap must break towards the smaller index as naive greedy does.
    rng = np.random.default_rng(list(kind.encode()))
    for values in ("uniform", "integer"):
        n, per_column = 2000, 16
        rows = rng.integers(0, n, n * per_column)
        cols = np.repeat(np.arange(n), per_column)
        u = rng.random(len(rows)) if values == "uniform" else rng.integers(1, 4, len(rows)) / 4
        obj = make(kind, sp.csr_matrix((u, (rows, cols)), shape=(n, n)), rng)
        naive, lazy = naive_greedy(obj, 600), lazy_greedy(obj, 600)
        assert np.array_equal(naive.indices, lazy.indices)
        assert np.array_equal(naive.gains, lazy.gains)
        assert naive.upper_bound == lazy.upper_bound
        assert lazy.evaluations < naive.evaluations / 20


def test_ties_go_to_the_smallest_index():
    rng = np.random.default_rng(7)
    for _ in range(20):
        K = rng.integers(0, 3, (6, 9)).astype(np.float64)
        expected = reference_greedy(K, 7)
        for optimizer in ["naive", "lazy"]:
            assert greedy(facility_location(K), 7, optimizer).indices.tolist() == expected
    # Identical columns: every step is a tie, so the picks come in index order.
    same = np.ones((4, 6))
    for optimizer in ["naive", "lazy", "stochastic"]:  # stochastic samples all 6 here
        selection = greedy(facility_location(same), 5, optimizer)
        assert selection.indices.tolist() == [0, 1, 2, 3, 4]
        assert selection.gains.tolist() == [4.0, 0.0, 0.0, 0.0, 0.0]
    picks = lazy_greedy(facility_location(same), 3, candidates=[5, 3, 1]).indices
    assert picks.tolist() == [1, 3, 5]


@pytest.mark.parametrize("kind", KINDS)
def test_brute_force_guarantee_and_upper_bound(kind):
    rng = np.random.default_rng(8)
    for _ in range(6):
        n_cand = int(rng.integers(5, 11))
        obj = make(kind, random_kernel(rng, 8, n_cand, "dense"), rng)
        for budget in range(1, 5):
            best = max(
                obj.evaluate(subset) for subset in itertools.combinations(range(n_cand), budget)
            )
            selection = lazy_greedy(obj, budget)
            assert selection.value >= (1 - 1 / math.e) * best - 1e-12
            assert selection.value <= best + 1e-12
            assert selection.upper_bound >= best - 1e-12


def test_matches_apricot_facility_location(monkeypatch):
    import numba

    # apricot JIT-compiles its gain loops on every fit (~8 s each); run them as plain python.
    monkeypatch.setattr(numba.config, "DISABLE_JIT", True)
    import apricot

    rng = np.random.default_rng(9)
    for _ in range(3):
        K = rng.random((40, 40))  # square (apricot's precomputed mode needs it) and asymmetric
        ours = lazy_greedy(facility_location(K), 12)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # apricot's precomputed X[j, i] = similarity of candidate j to point i: pass K.T.
            fit = apricot.FacilityLocationSelection(
                12, metric="precomputed", optimizer="naive", verbose=False
            ).fit(K.T)
            transposed = apricot.FacilityLocationSelection(
                12, metric="precomputed", optimizer="naive", verbose=False
            ).fit(K)
        assert ours.indices.tolist() == fit.ranking.tolist()
        np.testing.assert_allclose(ours.gains, fit.gains, rtol=1e-9)
        assert ours.indices.tolist() != transposed.ranking.tolist()  # orientation matters


def test_stochastic_greedy_is_seeded_and_close_to_lazy():
    rng = np.random.default_rng(10)
    obj = facility_location(sp.random(300, 400, density=0.1, format="csc", rng=rng))
    lazy = lazy_greedy(obj, 40)
    runs = [stochastic_greedy(obj, 40, epsilon=0.05, seed=s) for s in range(4)]
    again = stochastic_greedy(obj, 40, epsilon=0.05, seed=0)
    assert np.array_equal(runs[0].indices, again.indices)
    assert np.array_equal(runs[0].gains, again.gains)
    assert len({tuple(r.indices) for r in runs}) > 1  # the seed does change the samples
    sample = math.ceil(400 / 40 * math.log(1 / 0.05))
    for run in runs:
        assert len(run.indices) == len(set(run.indices.tolist())) == 40
        assert run.value >= 0.9 * lazy.value
        assert run.evaluations == 40 * sample
        assert run.value == pytest.approx(obj.evaluate(run.indices))


@pytest.mark.parametrize("optimizer", ["naive", "lazy", "stochastic"])
def test_candidates_restrict_the_ground_set(optimizer):
    rng = np.random.default_rng(11)
    K = rng.random((30, 50))
    candidates = rng.choice(50, size=20, replace=False)
    selection = greedy(facility_location(K), 8, optimizer, candidates=candidates)
    assert set(selection.indices.tolist()) <= set(candidates.tolist())
    ordered = np.sort(candidates)  # ground set in index order keeps the tie rule aligned
    sub = greedy(facility_location(K[:, ordered]), 8, optimizer)
    assert ordered[sub.indices].tolist() == selection.indices.tolist()
    assert selection.upper_bound == pytest.approx(sub.upper_bound)


@pytest.mark.parametrize("optimizer", ["naive", "lazy", "stochastic"])
def test_selection_records_gains_values_bound_and_progress(optimizer):
    rng = np.random.default_rng(12)
    obj = facility_location(rng.random((10, 12)) * (rng.random((10, 12)) < 0.3))
    calls: list[tuple[int, int]] = []
    selection = greedy(obj, 12, optimizer, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(t, 12) for t in range(1, 13)]
    assert selection.optimizer == optimizer
    assert selection.indices.dtype == np.int64
    assert sorted(selection.indices.tolist()) == list(range(12))  # no early stop at zero gain
    assert selection.gains[-1] == 0.0
    prefix_values = [obj.evaluate(selection.indices[: t + 1]) for t in range(12)]
    np.testing.assert_allclose(selection.objective, prefix_values, atol=1e-12)
    assert selection.value == pytest.approx(obj.evaluate(selection.indices), abs=1e-12)
    assert selection.upper_bound == pytest.approx(selection.value)  # nothing left to add
    if optimizer != "stochastic":
        assert np.all(np.diff(selection.gains) <= 1e-12)  # greedy gains never increase


def test_upper_bound_adds_the_budget_largest_remaining_gains():
    rng = np.random.default_rng(13)
    obj = facility_location(rng.random((25, 30)))
    selection = naive_greedy(obj, 5)
    state = obj.new_state()
    for j in selection.indices:
        obj.add(state, int(j))
    rest = [j for j in range(30) if j not in selection.indices]
    top = sorted((obj.gain(state, j) for j in rest), reverse=True)[:5]
    assert selection.upper_bound == pytest.approx(selection.value + sum(top))


def test_lazy_greedy_evaluates_far_fewer_gains_than_naive():
    rng = np.random.default_rng(14)
    obj = facility_location(sp.random(500, 500, density=0.05, format="csc", rng=rng))
    naive, lazy = naive_greedy(obj, 100), lazy_greedy(obj, 100)
    assert np.array_equal(naive.indices, lazy.indices)
    assert lazy.evaluations < naive.evaluations / 5


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda obj: greedy(obj, 7), "budget 7 exceeds the 6 candidates"),
        (lambda obj: greedy(obj, 3, candidates=[0, 1]), "budget 3 exceeds the 2 candidates"),
        (lambda obj: greedy(obj, 0), "budget must be an integer >= 1"),
        (lambda obj: greedy(obj, 0.3), "budget must be an integer >= 1"),
        (lambda obj: greedy(obj, 2, candidates=[1, 1, 2]), "duplicate"),
        (lambda obj: greedy(obj, 2, candidates=[0, 6]), r"candidates must lie in \[0, 6\)"),
        (lambda obj: greedy(obj, 2, candidates=[0.0, 1.0]), "integer column indices"),
        (lambda obj: greedy(obj, 2, optimizer="fast"), "optimizer must be one of"),
        (lambda obj: greedy(obj, 2, optimizer="stochastic", epsilon=1.0), "epsilon"),
    ],
)
def test_bad_arguments_raise_delift_error(call, message):
    with pytest.raises(DeliftError, match=message):
        call(facility_location(np.ones((3, 6))))


def test_bad_kernels_raise_before_selection():
    with pytest.raises(DeliftError, match="NaN"):
        greedy(facility_location(np.array([[0.5, np.nan], [0.1, 0.2]])), 1)
    with pytest.raises(DeliftError, match="rows"):
        greedy(fl_mutual_information(np.ones((4, 5)), np.ones((3, 2))), 1)


def test_gain_indices_out_of_range_raise_delift_error():
    obj = facility_location(np.ones((3, 6)))
    with pytest.raises(DeliftError, match=r"candidate indices must lie in \[0, 6\)"):
        obj.gains(obj.new_state(), [0, 6])
    with pytest.raises(DeliftError, match=r"candidate index must lie in \[0, 6\), got -1"):
        obj.add(obj.new_state(), -1)
