"""Selection variants: per-target normalisation, sharpening, the modular term, the paper preset.

Each value is checked against a hand computation or an independent dense recomputation.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import rankdata

from delift_ray.config import SelectionConfig
from delift_ray.config.sections import PAPER_SELECTION
from delift_ray.errors import ConfigError
from delift_ray.selection.greedy import lazy_greedy, naive_greedy, stochastic_greedy
from delift_ray.selection.kernels import (
    demonstration_means,
    kernel_values,
    normalize_rows,
    utility_kernel,
)
from delift_ray.selection.objectives import (
    facility_location,
    fl_conditional_gain,
    fl_mutual_information,
)
from delift_ray.selection.randgreedi import randgreedi
from delift_ray.selection.stages import STAGES

# ---------------------------------------------------------------------------------------------
# per-target normalisation, by hand

ROWS = np.array([0, 1, 0, 2, 1, 0, 3, 3])
U = np.array([0.3, 5.0, 0.1, 7.0, -1.0, 0.3, 2.0, 2.0])


def test_row_rank_by_hand():
    # row 0: 0.1 < 0.3 = 0.3 -> ranks 0, 1.5, 1.5 of 2; row 1: -1 < 5; row 2: one pair; row 3 ties
    got = normalize_rows(ROWS, U, "row_rank")
    np.testing.assert_array_equal(got, [0.75, 1.0, 0.0, 0.5, 0.0, 0.75, 0.5, 0.5])


def test_row_minmax_by_hand():
    got = normalize_rows(ROWS, U, "row_minmax")
    np.testing.assert_allclose(got, [1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    got = normalize_rows(np.array([4, 4, 4]), np.array([1.0, 2.0, 5.0]), "row_minmax")
    np.testing.assert_allclose(got, [0.0, 0.25, 1.0])


def test_row_z_by_hand():
    # mean 2, population std sqrt(2/3): z = -1.2247, 0, 1.2247; clipped at 0
    got = normalize_rows(np.array([0, 0, 0, 1]), np.array([1.0, 2.0, 3.0, 9.0]), "row_z")
    np.testing.assert_allclose(got, [0.0, 0.0, np.sqrt(1.5), 0.0])
    np.testing.assert_array_equal(normalize_rows(ROWS, U, "row_z")[[3, 6, 7]], [0.0, 0.0, 0.0])


def _per_row(rows, u, fn):
    out = np.empty_like(u)
    for r in np.unique(rows):
        at = np.flatnonzero(rows == r)
        out[at] = fn(u[at])
    return out


def _rank(v):
    return np.full(len(v), 0.5) if np.ptp(v) == 0 else (rankdata(v) - 1) / (len(v) - 1)


def _minmax(v):
    return np.zeros(len(v)) if np.ptp(v) == 0 else (v - v.min()) / np.ptp(v)


def _z(v):
    return np.zeros(len(v)) if v.std() == 0 else np.maximum((v - v.mean()) / v.std(), 0)


@pytest.mark.parametrize(
    ("how", "fn"), [("row_rank", _rank), ("row_minmax", _minmax), ("row_z", _z)]
)
def test_normalisations_match_a_per_row_loop_on_shuffled_pairs(how, fn):
    rng = np.random.default_rng(1)
    rows = rng.integers(0, 40, 600)
    u = np.round(rng.normal(size=600), 1)  # rounded: many ties
    u[rows == 7] = 0.25  # a constant row
    np.testing.assert_allclose(normalize_rows(rows, u, how), _per_row(rows, u, fn), atol=1e-12)


def test_none_is_the_identity_and_empty_input_is_empty():
    np.testing.assert_array_equal(normalize_rows(ROWS, U, "none"), U)
    for how in ("row_rank", "row_minmax", "row_z"):
        assert normalize_rows(np.array([], int), np.array([]), how).size == 0  # type: ignore[arg-type]


def test_sharpen_is_a_power_after_scaling():
    u = np.array([-0.5, 0.0, 0.25, 0.5])
    rows = np.zeros(4, int)
    np.testing.assert_allclose(kernel_values(rows, u, "minmax", sharpen=2), [0, 0.25, 0.5625, 1])
    np.testing.assert_allclose(kernel_values(rows, u, "clip", sharpen=3), [0, 0, 0.015625, 0.125])
    # a normalisation replaces the global scaling; sharpen applies after it
    np.testing.assert_allclose(
        kernel_values(rows, u, "minmax", "row_rank", 2.0), [0, 1 / 9, 4 / 9, 1]
    )


def test_utility_kernel_normalises_scored_pairs_only():
    rows, cols = np.array([0, 0, 1, 1, 1]), np.array([1, 2, 0, 1, 2])
    u = np.array([0.2, -0.2, 1.0, 3.0, 2.0])
    k = utility_kernel(rows, cols, u, (3, 3), "minmax", "row_minmax")
    expected = np.array([[0, 1, 0], [0, 1, 0.5], [0, 0, 0]])
    np.testing.assert_allclose(k.toarray(), expected)
    assert k.nnz == 5  # a scored pair of value 0 is still stored: it counts for m_j
    # the global scaling would instead map -0.2 -> 0 and 3.0 -> 1 over the whole kernel
    glob = utility_kernel(rows, cols, u, (3, 3), "minmax").toarray()
    assert glob[0, 1] == pytest.approx(0.4 / 3.2)


# ---------------------------------------------------------------------------------------------
# the modular term


def test_demonstration_means_by_hand():
    # column 0: (0, 0) is its self pair, left out -> mean of 0.2 and 0.4; column 1: 0.6 and 1.0
    # (self pair (1, 1) left out); column 2: only its self pair -> 0; column 3: never scored -> 0
    rows = np.array([0, 1, 2, 0, 1, 2, 2])
    cols = np.array([0, 0, 0, 1, 1, 1, 2])
    vals = np.array([0.9, 0.2, 0.4, 0.6, 0.7, 1.0, 0.8])
    np.testing.assert_allclose(demonstration_means(rows, cols, vals, 4), [0.3, 0.8, 0.0, 0.0])


def _brute_value(K, S, cap=None, floor=None, w=None):
    """f(S) from the definitions in SPEC §5 plus the modular term, dense and by loops."""
    n = K.shape[0]
    total = 0.0
    for i in range(n):
        c = max((K[i, j] for j in S), default=0.0)
        if cap is not None:
            c = min(c, cap[i])
        if floor is not None:
            c = max(c - floor[i], 0.0)
        total += c
    return total + (0.0 if w is None else sum(w[j] for j in S))


def _sparse_kernel(seed, n=30, density=0.3):
    rng = np.random.default_rng(seed)
    K = sp.random(n, n, density=density, random_state=rng, format="csr")
    K.data = np.round(K.data, 2)  # ties
    return K


@pytest.mark.parametrize("seed", range(4))
def test_fl_with_modular_lazy_equals_naive_and_brute_force(seed):
    K = _sparse_kernel(seed)
    coo = K.tocoo()
    w = 0.7 * demonstration_means(coo.row, coo.col, coo.data, K.shape[1])
    obj = facility_location(K, weights=w)
    naive, lazy = naive_greedy(obj, 8), lazy_greedy(obj, 8)
    assert lazy.indices.tolist() == naive.indices.tolist()
    np.testing.assert_array_equal(lazy.gains, naive.gains)
    dense = K.toarray()
    for sel in (naive, lazy):
        want = _brute_value(dense, sel.indices.tolist(), w=w)
        assert sel.value == pytest.approx(want, rel=1e-12)
        assert obj.evaluate(sel.indices) == pytest.approx(want, rel=1e-12)
        np.testing.assert_allclose(sel.objective[-1], want, rtol=1e-12)
    # each pick's gain is FL's gain plus its weight
    plain = facility_location(K)
    state = plain.new_state()
    for j, g in zip(naive.indices.tolist(), naive.gains, strict=True):
        assert g == pytest.approx(plain.gain(state, j) + w[j], rel=1e-12)
        plain.add(state, j)


def test_modular_changes_the_pick_by_hand():
    # FL alone picks column 0 (0.5 + 0.5 = 1.0 against column 1's 0.9). Every pair scored, self
    # pairs left out: m_0 = (0.5 + 0) / 2, m_1 = (0.9 + 0) / 2, m_2 = 0; with modular 2 the
    # gains are 1.0 + 0.5 and 0.9 + 0.9, so column 1 wins.
    K = np.array([[0.5, 0.9, 0.0], [0.5, 0.0, 0.0], [0.0, 0.0, 0.0]])
    rows, cols = np.nonzero(np.ones_like(K))
    m = demonstration_means(rows, cols, K[rows, cols], 3)
    np.testing.assert_allclose(m, [0.25, 0.45, 0.0])
    assert naive_greedy(facility_location(K), 1).indices.tolist() == [0]
    sel = naive_greedy(facility_location(K, weights=2.0 * m), 1)
    assert sel.indices.tolist() == [1]
    assert sel.value == pytest.approx(0.9 + 0.9)


@pytest.mark.parametrize("kind", ["flmi", "flcg"])
def test_cross_objectives_with_modular_match_brute_force(kind):
    rng = np.random.default_rng(5)
    K = rng.random((7, 7))
    C = rng.random((7, 2))
    w = 0.3 * rng.random(7)
    if kind == "flmi":
        obj = fl_mutual_information(K, C, eta=0.8, weights=w)
        extra = {"cap": 0.8 * C.max(axis=1)}
    else:
        obj = fl_conditional_gain(K, C, nu=0.6, weights=w)
        extra = {"floor": 0.6 * C.max(axis=1)}
    naive, lazy = naive_greedy(obj, 3), lazy_greedy(obj, 3)
    assert lazy.indices.tolist() == naive.indices.tolist()
    assert naive.value == pytest.approx(_brute_value(K, naive.indices, w=w, **extra))
    # on 7 candidates, greedy's value is within (1 - 1/e) of the brute-force optimum
    best = max(_brute_value(K, S, w=w, **extra) for S in itertools.combinations(range(7), 3))
    assert naive.value >= (1 - 1 / np.e) * best
    assert naive.upper_bound >= best


def test_randgreedi_and_stochastic_carry_the_weights():
    K = _sparse_kernel(9, n=40)
    w = np.zeros(40)
    w[[5, 17, 33]] = 50.0  # far above any coverage gain: these three must be picked
    obj = facility_location(K, weights=w)
    ids = [f"r{k}" for k in range(40)]
    for sel in (randgreedi(obj, 3, ids, parts=4), stochastic_greedy(obj, 3, 0.5, seed=1)):
        if sel.optimizer == "randgreedi":
            assert sorted(sel.indices.tolist()) == [5, 17, 33]
        assert sel.value == pytest.approx(_brute_value(K.toarray(), sel.indices, w=w))


def test_weights_are_validated():
    from delift_ray.errors import DeliftError

    with pytest.raises(DeliftError, match="weights must have shape"):
        facility_location(np.ones((2, 3)), weights=np.ones(2))
    with pytest.raises(DeliftError, match="weights has negative entries"):
        facility_location(np.ones((2, 2)), weights=np.array([0.1, -0.1]))


@pytest.mark.parametrize("name", ["instruction", "task", "continual"])
def test_stages_add_modular_times_the_demonstration_means(name):
    rng = np.random.default_rng(2)
    K, C, m = rng.random((6, 6)), rng.random((6, 2)), rng.random(6)
    stage = STAGES[name]
    cross = None if stage.cross is None else C
    sel = SelectionConfig(modular=0.4, eta=0.9, nu=0.5)
    got = stage.objective(K, cross, sel, m)
    np.testing.assert_allclose(got.weights, 0.4 * m)
    plain = stage.objective(K, cross, sel)  # no means (e.g. se): no modular term
    assert not plain.weights.any()
    off = stage.objective(K, cross, SelectionConfig(), m)  # modular 0: none
    assert not off.weights.any()
    S = naive_greedy(got, 3).indices
    assert got.evaluate(S) == pytest.approx(plain.evaluate(S) + 0.4 * m[S].sum())


# ---------------------------------------------------------------------------------------------
# config: values, the paper preset


def test_defaults_are_the_paper_and_paper_resolves_to_spec():
    default = SelectionConfig()
    assert {k: getattr(default, k) for k in PAPER_SELECTION} == PAPER_SELECTION
    assert default.resolved() is default
    paper = SelectionConfig(preset="paper").resolved()
    assert paper.variant() == {
        "preset": "paper",
        "scaling": "minmax",
        "normalize": "none",
        "sharpen": 1.0,
        "modular": 0.0,
        "eta": 1.0,
        "nu": 1.0,
    }
    # a method's preset overrides whatever the variant keys say
    varied = SelectionConfig(normalize="row_z", sharpen=3.0, modular=0.5, optimizer="naive")
    forced = varied.resolved("paper")
    assert forced.variant() == paper.variant() and forced.optimizer == "naive"
    forced.validate("selection")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"sharpen": 0.5}, "selection.sharpen must be >= 1"),
        ({"modular": -0.1}, "selection.modular must be >= 0"),
        ({"normalize": "row_rank", "scaling": "clip"}, "replaces the global scaling"),
        (
            {"preset": "paper", "normalize": "row_rank"},
            "selection.normalize: 'row_rank' contradicts selection.preset: paper",
        ),
        ({"preset": "paper", "sharpen": 2.0}, "selection.sharpen: 2.0 contradicts"),
        ({"preset": "paper", "modular": 0.1}, "selection.modular: 0.1 contradicts"),
        ({"preset": "paper", "scaling": "clip"}, "selection.scaling: 'clip' contradicts"),
        ({"preset": "paper", "eta": 0.5}, "selection.eta: 0.5 contradicts"),
    ],
)
def test_bad_variant_values_are_one_line_config_errors(fields, message):
    with pytest.raises(ConfigError) as e:
        SelectionConfig(**fields).validate("selection")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_variant_keys_load_from_overrides(tmp_path):
    from delift_ray.config import load_config

    pool = tmp_path / "pool.jsonl"
    pool.write_text('{"instruction": "a", "output": "b"}\n')
    base = [f"data.path={pool}", "model.path=m"]
    cfg = load_config(None, [*base, "selection.normalize=row_z", "selection.sharpen=2"])
    assert (cfg.selection.normalize, cfg.selection.sharpen) == ("row_z", 2.0)
    with pytest.raises(ConfigError, match=r"selection.normalize must be one of none, row_rank"):
        load_config(None, [*base, "selection.normalize=rank"])
    with pytest.raises(ConfigError, match=r"selection.preset must be one of default, paper"):
        load_config(None, [*base, "selection.preset=authors"])
    assert load_config(None, [*base, "selection.preset=paper"]).selection.preset == "paper"
