"""FL / FLMI / FLCG: values and gains against the SPEC formulas, sparse == dense, submodularity."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from delift_ray.errors import DeliftError
from delift_ray.selection.objectives import (
    Objective,
    facility_location,
    fl_conditional_gain,
    fl_mutual_information,
)

KINDS = ["fl", "flmi", "flcg"]


def make(kind: str, K, R=None, scale: float = 1.0) -> Objective:
    """The objective of a kind; R is Q for FLMI and P for FLCG."""
    if kind == "fl":
        return facility_location(K)
    if kind == "flmi":
        return fl_mutual_information(K, R, eta=scale)
    return fl_conditional_gain(K, R, nu=scale)


def coverage(K: np.ndarray, A, i: int) -> float:
    """c_i = max over j in A of K[i, j], 0 for the empty set."""
    return max((float(K[i, j]) for j in A), default=0.0)


def ref_value(kind: str, K: np.ndarray, A, R=None, scale: float = 1.0) -> float:
    """f(A) straight from SPEC section 5, with python loops."""
    total = 0.0
    for i in range(K.shape[0]):
        c = coverage(K, A, i)
        if kind == "fl":
            total += c
        elif kind == "flmi":
            total += min(c, scale * max(R[i]))
        else:
            total += max(c - scale * max(R[i]), 0.0)
    return total


def ref_gain(kind: str, K: np.ndarray, A, j: int, R=None, scale: float = 1.0) -> float:
    """gain(j | A) straight from the SPEC's gain formulas, with python loops."""
    total = 0.0
    for i in range(K.shape[0]):
        c, k = coverage(K, A, i), float(K[i, j])
        if kind == "fl":
            total += max(k - c, 0.0)
        elif kind == "flmi":
            cap = scale * max(R[i])
            total += min(max(c, k), cap) - min(c, cap)
        else:
            total += max(k - max(c, scale * max(R[i])), 0.0)
    return total


def random_problem(rng: np.random.Generator, n_rows: int, n_cand: int, density: float):
    """A kernel with exact zeros (unscored pairs) and a cross kernel with 3 columns."""
    K = rng.random((n_rows, n_cand)) * (rng.random((n_rows, n_cand)) < density)
    R = rng.random((n_rows, 3)) * rng.uniform(0.2, 1.0)
    return K, R


K3 = np.array([[1.0, 0.5, 0.0], [0.2, 0.8, 0.0], [0.0, 0.3, 0.9]])
Q3 = np.array([[0.6, 0.1], [1.0, 0.0], [0.5, 0.5]])  # q = [0.6, 1.0, 0.5]
P3 = np.array([[0.5], [0.9], [0.1]])  # p = [0.5, 0.9, 0.1]


@pytest.mark.parametrize(
    ("kind", "R", "value_01", "gains_empty", "gains_after_1"),
    [
        ("fl", None, 1.0 + 0.8 + 0.3, [1.2, 1.6, 0.9], [0.5, 0.0, 0.6]),
        ("flmi", Q3, 0.6 + 0.8 + 0.3, [0.8, 1.6, 0.5], [0.1, 0.0, 0.2]),
        ("flcg", P3, 0.5 + 0.0 + 0.2, [0.5, 0.2, 0.8], [0.5, 0.0, 0.6]),
    ],
)
def test_hand_computed_values_and_gains(kind, R, value_01, gains_empty, gains_after_1):
    obj = make(kind, K3, R)
    assert obj.evaluate([0, 1]) == pytest.approx(value_01, abs=1e-12)
    assert obj.evaluate([]) == 0.0
    state = obj.new_state()
    assert obj.gains(state, [0, 1, 2]) == pytest.approx(gains_empty, abs=1e-12)
    obj.add(state, 1)
    assert obj.gains(state, [0, 1, 2]) == pytest.approx(gains_after_1, abs=1e-12)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("scale", [1.0, 0.7])
def test_values_and_gains_match_reference_formulas(kind, scale):
    rng = np.random.default_rng(1)
    for _ in range(5):
        K, R = random_problem(rng, 9, 7, density=0.6)
        obj = make(kind, K, R, scale)
        state, A = obj.new_state(), []
        for j in rng.permutation(7)[:5]:
            expected = [ref_gain(kind, K, A, c, R, scale) for c in range(7)]
            assert obj.gains(state, np.arange(7)) == pytest.approx(expected, abs=1e-12)
            obj.add(state, int(j))
            A.append(int(j))
            assert obj.value(state) == pytest.approx(ref_value(kind, K, A, R, scale), abs=1e-12)
            assert obj.evaluate(A) == obj.value(state)


@pytest.mark.parametrize("kind", KINDS)
def test_sparse_and_dense_inputs_give_identical_bits(kind):
    rng = np.random.default_rng(2)
    K, R = random_problem(rng, 30, 25, density=0.3)
    K = K.astype(np.float32).astype(np.float64)  # float32 inputs then convert exactly
    reference = make(kind, K, R)
    variants = [
        make(kind, K.astype(np.float32), R),
        make(kind, sp.csr_matrix(K), sp.csr_matrix(R)),
        make(kind, sp.csc_matrix(K.astype(np.float32)), R),
        make(kind, sp.coo_array(K), sp.csc_array(R)),
        make(kind, sp.csr_array(K), R),
    ]
    order = rng.permutation(25)[:8]
    for obj in variants:
        s_ref, s = reference.new_state(), obj.new_state()
        for j in order:
            assert np.array_equal(
                reference.gains(s_ref, np.arange(25)), obj.gains(s, np.arange(25))
            )
            reference.add(s_ref, int(j))
            obj.add(s, int(j))
            assert reference.value(s_ref) == obj.value(s)


def test_gain_of_one_candidate_equals_batched_gain_bitwise():
    rng = np.random.default_rng(3)
    n_rows, n_cand = 1500, 60
    density = rng.uniform(0.0, 1.0, n_cand)  # column lengths from 0 to ~1500
    density[[0, 17, -1]] = 0.0  # empty first, middle and last columns
    K = rng.random((n_rows, n_cand)) * (rng.random((n_rows, n_cand)) < density)
    obj = facility_location(sp.csr_matrix(K))
    state = obj.new_state()
    for j in rng.permutation(n_cand)[:10]:
        batch = obj.gains(state, np.arange(n_cand))
        shuffled = rng.permutation(n_cand)
        assert np.array_equal(obj.gains(state, shuffled), batch[shuffled])
        for c in range(n_cand):
            assert obj.gains(state, [c])[0] == batch[c] == obj.gain(state, c)
        assert batch[[0, 17, n_cand - 1]].tolist() == [0.0, 0.0, 0.0]
        obj.add(state, int(j))
    assert obj.gains(state, np.array([0, n_cand - 1])).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("kind", KINDS)
def test_monotone_and_submodular(kind):
    rng = np.random.default_rng(4)
    for _ in range(20):
        K, R = random_problem(rng, 12, 10, density=0.5)
        obj = make(kind, K, R, scale=rng.uniform(0.3, 1.5))
        order = rng.permutation(10)
        a, b = sorted(rng.choice(8, size=2, replace=False))
        A, B = order[:a], order[:b]  # A is a subset of B
        sA, sB = obj.new_state(), obj.new_state()
        for j in A:
            obj.add(sA, int(j))
        for j in B:
            obj.add(sB, int(j))
        for j in order[b:]:
            gA, gB = obj.gain(sA, int(j)), obj.gain(sB, int(j))
            assert gA >= gB - 1e-12
            assert gB >= 0.0
            grown = obj.evaluate([*B, j]) - obj.evaluate(B)
            assert grown == pytest.approx(gB, abs=1e-12)


def test_flmi_and_flcg_limits_reduce_to_fl():
    rng = np.random.default_rng(5)
    K, R = random_problem(rng, 15, 12, density=0.5)
    A = [3, 7, 1]
    fl = facility_location(K).evaluate(A)
    assert fl_mutual_information(K, R, eta=1e9).evaluate(A) == pytest.approx(fl)
    assert fl_conditional_gain(K, R, nu=0.0).evaluate(A) == pytest.approx(fl)
    assert fl_mutual_information(K, R, eta=0.0).evaluate(A) == 0.0
    assert fl_conditional_gain(K, R, nu=1e9).evaluate(A) == 0.0


def test_flcg_with_implicit_zero_rows_in_sparse_p():
    P = sp.csr_matrix(np.array([[0.0, 0.0], [0.4, 0.0], [0.0, 0.0]]))  # p = [0, 0.4, 0]
    assert fl_conditional_gain(K3, P).evaluate([1]) == pytest.approx(0.5 + 0.4 + 0.3)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: facility_location(np.array([[0.1, np.nan]])), "NaN or inf"),
        (lambda: facility_location(sp.csr_matrix(np.array([[np.inf]]))), "NaN or inf"),
        (lambda: facility_location(np.array([[0.1, -0.2]])), "negative"),
        (lambda: facility_location(np.zeros((0, 4))), "empty"),
        (lambda: facility_location(np.ones(4)), "2-D"),
        (lambda: fl_mutual_information(K3, np.ones((2, 2))), "Q has 2 rows but the kernel K has 3"),
        (lambda: fl_conditional_gain(K3, np.ones((4, 1))), "P has 4 rows but the kernel K has 3"),
        (lambda: fl_mutual_information(K3, Q3, eta=-1.0), "eta must be"),
        (lambda: fl_conditional_gain(K3, P3, nu=float("nan")), "nu must be"),
        (lambda: fl_conditional_gain(K3, -P3), "negative"),
        (lambda: Objective(K3, floor=np.zeros(2)), "floor must have shape"),
    ],
)
def test_bad_inputs_raise_one_line_delift_error(build, message):
    with pytest.raises(DeliftError, match=message) as info:
        build()
    assert "\n" not in str(info.value)
