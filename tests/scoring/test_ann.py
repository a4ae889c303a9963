"""Approximate kNN (faiss HNSW): recall against exact top-k, exact pairs when exhaustive, the
switch between the paths, the error without faiss, and the recall in the run's manifest."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest

from delift_ray.config import EmbedderConfig, PairsConfig, ScoringConfig, load_config
from delift_ray.errors import DeliftError
from delift_ray.scoring.ann import HnswSettings, hnsw_neighbours
from delift_ray.scoring.blocks import POOL, TextSet
from delift_ray.scoring.knn import neighbours, recall_at_k
from delift_ray.scoring.pairs import exact_neighbours, neighbour_pairs
from delift_ray.scoring.stage import choose_pairs
from delift_ray.workflows.select import run_select


def clustered(rows: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    """Unit vectors around random centres (within-cluster cosine about 0.5)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    x = centres[rng.integers(0, clusters, rows)] * np.sqrt(dim) + rng.normal(size=(rows, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_hnsw_neighbours_keep_the_exact_contract_and_find_most_of_exact_top_k():
    emb = clustered(2000, 32, 20, 0)
    k = 10
    nbrs = hnsw_neighbours(emb, emb, k, True, HnswSettings(m=8, ef_construction=16, ef_search=16))
    assert nbrs.shape == (2000, k) and nbrs.dtype == np.int64
    assert not (nbrs == np.arange(2000)[:, None]).any()  # never its own neighbour
    assert all(len(set(row)) == k for row in nbrs.tolist())
    sims = np.take_along_axis(emb @ emb.T, nbrs, axis=1)
    assert (np.diff(sims, axis=1) <= 1e-6).all()  # most similar first
    recall, sampled = recall_at_k(nbrs, emb, emb, True, 500, seed=0)
    assert sampled == 500 and recall >= 0.9  # random neighbours: about k / n = 0.005
    shuffled = nbrs[np.random.default_rng(1).permutation(2000)]  # a broken index's answer
    assert recall_at_k(shuffled, emb, emb, True, 500, seed=0)[0] < 0.2


def test_exhaustive_hnsw_gives_exactly_the_exact_pairs():
    emb = clustered(400, 16, 8, 1)
    every = HnswSettings(ef_search=400)
    for targets, demos, same in ((emb, emb, True), (emb, emb[:250], False)):
        exact = exact_neighbours(targets, demos, 7, same)
        approx = hnsw_neighbours(targets, demos, 7, same, every)
        np.testing.assert_array_equal(approx, exact)  # same neighbours in the same order
        pairs_a, pairs_e = neighbour_pairs(approx, same), neighbour_pairs(exact, same)
        assert all((a == e).all() for a, e in zip(pairs_a, pairs_e))


def test_equal_similarities_go_to_the_lower_index_even_at_the_k_th_place():
    demos = clustered(50, 8, 5, 5)
    demos[30] = demos[12]  # row 30 duplicates row 12
    query = demos[[12]] + 0.01
    every = HnswSettings(ef_search=50)
    assert hnsw_neighbours(query, demos, 1, False, every).tolist() == [[12]]
    assert hnsw_neighbours(query, demos, 2, False, every).tolist() == [[12, 30]]
    assert hnsw_neighbours(demos, demos, 1, True, every)[[12, 30]].tolist() == [[30], [12]]


def test_the_candidate_count_picks_the_path_and_ann_reports_its_recall():
    emb = clustered(500, 16, 10, 2)
    base = PairsConfig(mode="knn", k=5, recall_sample=200)
    exact, report = neighbours(emb, emb, 5, True, dataclasses.replace(base, ann_from_rows=501), 0)
    assert report["method"] == "exact" and report["recall_sample"] == 0
    np.testing.assert_array_equal(exact, exact_neighbours(emb, emb, 5, True))
    approx, report = neighbours(emb, emb, 5, True, dataclasses.replace(base, ann_from_rows=500), 0)
    assert report["method"] == "hnsw" and report["recall_sample"] == 200
    assert report["recall_at_k"] == pytest.approx(recall_at_k(approx, emb, emb, True, 200, 0)[0])
    assert 0.9 <= report["recall_at_k"] <= 1.0 and approx.shape == (500, 5)


def test_k_too_large_is_the_same_config_error_on_the_ann_path():
    emb = clustered(6, 4, 2, 3)
    with pytest.raises(DeliftError, match=r"pairs\.k=6 needs more than the 6 candidates"):
        hnsw_neighbours(emb, emb, 6, True, HnswSettings())


def test_without_faiss_the_ann_path_stops_before_embedding_with_the_extra_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` now raises ImportError
    pairs = PairsConfig(mode="knn", k=2, embedder="self", ann_from_rows=3)
    sets = {POOL: TextSet([str(n) for n in range(4)], ["x"] * 4, ["y"] * 4)}
    # embedder=self without a model would fail with another message if embedding came first
    with pytest.raises(DeliftError) as caught:
        choose_pairs(pairs, EmbedderConfig(), ScoringConfig(executor="local"), 0, sets)
    assert str(caught.value) == (
        "approximate kNN search (pairs.ann_from_rows) needs the faiss package, which is not "
        "installed: pip install 'delift-ray[scale]'"
    )
    emb = clustered(4, 4, 2, 4)  # below the threshold the exact path needs no faiss
    below = dataclasses.replace(pairs, ann_from_rows=5)
    assert neighbours(emb, emb, 2, True, below, 0)[1]["method"] == "exact"


def test_a_knn_run_records_the_search_and_its_recall_in_the_manifest(
    tmp_path, word_pool, tiny_model_dir
):
    cfg = load_config(
        None,
        [
            f"data.path={word_pool(10)}",
            f"model.path={tiny_model_dir}",
            f"output_dir={tmp_path / 'out'}",
            "budget=6",
            "scoring.executor=local",
            "pairs.mode=knn",
            "pairs.k=3",
            "pairs.embedder=self",
            "pairs.ann_from_rows=20",  # the pool's 20 rows take the faiss path
            "pairs.recall_sample=20",
        ],
    )
    knn = run_select(cfg).manifest["kernel"]["knn"]
    assert set(knn) == {POOL}
    assert knn[POOL]["method"] == "hnsw" and knn[POOL]["recall_sample"] == 20
    assert knn[POOL]["k"] == 3 and 0.9 <= knn[POOL]["recall_at_k"] <= 1.0
