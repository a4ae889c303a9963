"""The method table, and the methods without a kernel: the per-group quota draw."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from delift_ray.config import SelectionConfig
from delift_ray.data.examples import Example, ExampleSet
from delift_ray.errors import DeliftError
from delift_ray.selection.methods import (
    METHODS,
    Draw,
    OrderRequest,
    ScoredUtilities,
    SentenceEmbeddings,
    permute_utilities,
    quota_order,
    run_greedy,
)


def test_quota_gives_small_groups_everything_and_shares_the_rest_evenly():
    groups = ["a"] * 10 + ["b"] * 2 + ["c"] * 5
    order = quota_order(groups, 9, seed=0)
    counts = Counter(groups[i] for i in order)
    assert len(order) == len(set(order.tolist())) == 9
    assert counts["b"] == 2 and counts["a"] >= 3 and counts["c"] >= 3
    assert np.array_equal(order, quota_order(groups, 9, seed=0))


@pytest.mark.parametrize("seed", range(20))
def test_quota_is_max_min_fair(seed):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 12, size=rng.integers(1, 6))
    groups = [f"g{g}" for g, s in enumerate(sizes) for _ in range(s)]
    budget = int(rng.integers(0, len(groups) + 3))
    order = quota_order(groups, budget, seed)
    counts = Counter(groups[i] for i in order)
    assert len(order) == len(set(order.tolist())) == min(budget, len(groups))
    top = max(counts.values(), default=0)
    for g, size in zip(sorted(set(groups), key=lambda x: int(x[1:])), sizes):
        # every group either gives all its rows or is within one row of the largest share
        assert counts[g] == size or counts[g] >= top - 1


def test_the_table_says_what_each_method_needs_and_how_compare_plans_it():
    assert list(METHODS) == [
        "delift",
        "delift-paper",
        "delift-shuffled",
        "se",
        "random",
        "quota",
        "clean",
        "full",
    ]
    needs = {name: m.needs for name, m in METHODS.items()}
    assert needs == {
        "delift": "utilities",
        "delift-paper": "utilities",
        "delift-shuffled": "utilities",
        "se": "embeddings",
        "random": "nothing",
        "quota": "nothing",
        "clean": "nothing",
        "full": "nothing",
    }
    assert [n for n, m in METHODS.items() if m.seeded_draw] == ["random", "quota", "clean"]
    assert [n for n, m in METHODS.items() if m.whole_pool] == ["full"]
    assert isinstance(METHODS["se"].kernels, SentenceEmbeddings)
    shuffled = METHODS["delift-shuffled"].kernels
    assert isinstance(shuffled, ScoredUtilities) and shuffled.transform is permute_utilities
    assert METHODS["delift"].kernels == ScoredUtilities()  # the utilities as scored
    assert METHODS["delift-paper"].kernels == ScoredUtilities()
    assert {n: m.preset for n, m in METHODS.items() if m.preset} == {"delift-paper": "paper"}


def test_permute_utilities_is_the_documented_seeded_permutation():
    u = np.arange(10.0)
    np.testing.assert_array_equal(
        permute_utilities(u, 3, 1), np.random.default_rng([3, 1]).permutation(u)
    )


def pool_of(kinds):
    examples = [
        Example(id=str(k), source="p", row=k, x="x", y="y", record={"kind": kind})
        for k, kind in enumerate(kinds)
    ]
    return ExampleSet(examples, rejects=[], duplicates={}, schema=None, format="jsonl")


def test_unscored_methods_draw_without_an_objective():
    req = OrderRequest(pool_of("aabbbc"), 3, 0, SelectionConfig(quota_by="kind"))
    for name in ("random", "quota", "full"):
        picked = METHODS[name].order(req)
        assert isinstance(picked, Draw) and picked.indices.dtype == np.int64
    assert METHODS["full"].order(req).indices.tolist() == [0, 1, 2, 3, 4, 5]
    quota = METHODS["quota"].order(req).indices
    assert sorted("aabbbc"[i] for i in quota) == ["a", "b", "c"]
    with pytest.raises(DeliftError, match="greedy needs a method that builds kernels"):
        run_greedy(req)


def test_clean_draws_only_rows_without_a_truthy_exclude_field():
    flags = [
        {"is_wrong": w, "is_off_task": o}
        for w, o in [(0, 0), (1, 0), (0, 1), (0, 0), (1, 1), (0, 0)]
    ]
    examples = [
        Example(id=str(k), source="p", row=k, x="x", y="y", record=r) for k, r in enumerate(flags)
    ]
    pool = ExampleSet(examples, rejects=[], duplicates={}, schema=None, format="jsonl")
    sel = SelectionConfig(exclude_by="is_wrong, is_off_task")
    picks = [METHODS["clean"].order(OrderRequest(pool, 3, s, sel)).indices for s in range(8)]
    assert all(sorted(p.tolist()) == [0, 3, 5] for p in picks)  # every clean row, no other
    assert len({tuple(p.tolist()) for p in picks}) > 1  # in a seeded order
    two = {
        tuple(sorted(METHODS["clean"].order(OrderRequest(pool, 2, s, sel)).indices.tolist()))
        for s in range(20)
    }
    assert two <= {(0, 3), (0, 5), (3, 5)} and len(two) > 1
    with pytest.raises(DeliftError, match=r"3 rows are left .* budget of 4"):
        METHODS["clean"].order(OrderRequest(pool, 4, 0, sel))
    with pytest.raises(DeliftError, match="no row of the pool has a field 'nope'"):
        METHODS["clean"].order(OrderRequest(pool, 1, 0, SelectionConfig(exclude_by="nope")))
