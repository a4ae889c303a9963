"""Selection methods without a kernel: the per-group quota draw."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from delift_ray.selection.methods import quota_order


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
