"""Pair choice: dense, exact kNN (self excluded, then added), random extras, their union."""

from __future__ import annotations

import numpy as np
import pytest

from delift_ray.errors import DeliftError
from delift_ray.scoring.pairs import dense_pairs, knn_pairs, random_pairs, union_pairs


def unit(rows: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(rows, dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_dense_pairs_cover_every_pair_grouped_by_demo():
    i, j = dense_pairs(3, 2)
    assert list(zip(i.tolist(), j.tolist())) == [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1)]


def test_knn_pairs_equal_a_full_sort_and_include_self():
    emb = unit(60, 8, 0)
    i, j = knn_pairs(emb, emb, 4, same_set=True, block_rows=7)
    sims = emb @ emb.T
    np.fill_diagonal(sims, -np.inf)
    expected = {(r, c) for r in range(60) for c in np.argsort(-sims[r])[:4]}
    expected |= {(r, r) for r in range(60)}
    assert set(zip(i.tolist(), j.tolist())) == expected and len(i) == 60 * 5
    assert (np.diff(j) >= 0).all()


def test_k_larger_than_the_pool_is_a_config_error():
    emb = unit(5, 4, 1)
    with pytest.raises(DeliftError, match=r"pairs\.k=5 needs more than the 5 candidates"):
        knn_pairs(emb, emb, 5, same_set=True)


def test_random_pairs_and_union_are_distinct_and_grouped_by_demo():
    i, j = random_pairs(50, 40, 3, seed=0)
    assert len(i) == 150 and (np.bincount(i) == 3).all() and j.max() < 40
    assert (random_pairs(50, 40, 3, seed=0)[1] == j).all()
    knn = knn_pairs(np.eye(50)[:, :8] + 0.1, np.eye(50)[:, :8] + 0.1, 2, same_set=True)
    ui, uj = union_pairs(knn, (i, j))
    both = set(zip(*knn)) | set(zip(i.tolist(), j.tolist()))
    assert set(zip(ui.tolist(), uj.tolist())) == both and len(ui) == len(both)
    assert (np.diff(uj) >= 0).all()
