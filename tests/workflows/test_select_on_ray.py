"""The Ray path: scoring on a Ray Data actor pool gives the local executor's utilities and picks;
kNN pairs score a fraction of the pairs; --dry-run plans without scoring or writing."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from delift_ray.config import ModelConfig, ScoringConfig, TemplatesConfig, load_config
from delift_ray.distributed.maps import task_map
from delift_ray.distributed.scoring import score_blocks
from delift_ray.errors import DeliftError
from delift_ray.scoring.blocks import POOL, TextSet, WorkerSpec, plan_plain
from delift_ray.scoring.pairs import knn_pairs
from delift_ray.workflows.select import run_select


@pytest.fixture
def pool(word_pool):
    return word_pool(10)


def cfg(tmp_path, pool, model, name, *extra):
    return load_config(
        None,
        [
            f"data.path={pool}",
            f"model.path={model}",
            f"output_dir={tmp_path / name}",
            "budget=6",
            "scoring.demos_per_block=4",
            *extra,
        ],
    )


def utilities(result):
    t = pq.read_table(result.files["utilities"]).to_pandas()
    return t.sort_values(["target_id", "demo_id"]).reset_index(drop=True)


def test_ray_actor_pool_matches_local_executor(tmp_path, pool, tiny_model_dir, ray_local):
    on_ray = run_select(
        cfg(tmp_path, pool, tiny_model_dir, "ray", "scoring.executor=ray", "scoring.actors=2")
    )
    local = run_select(cfg(tmp_path, pool, tiny_model_dir, "local", "scoring.executor=local"))
    a, b = utilities(on_ray), utilities(local)
    assert list(a["target_id"]) == list(b["target_id"]) and len(a) == 20 * 20
    np.testing.assert_allclose(a["d1"], b["d1"], atol=1e-6)
    np.testing.assert_allclose(a["d0"], b["d0"], atol=1e-6)
    pick = lambda r: pq.read_table(r.files["selection"])["id"].to_pylist()  # noqa: E731
    assert pick(on_ray) == pick(local)
    assert on_ray.manifest["kernel"]["pairs_scored"] == 400


def test_knn_scores_k_plus_one_pairs_per_target(tmp_path, pool, tiny_model_dir, ray_local):
    result = run_select(
        cfg(
            tmp_path,
            pool,
            tiny_model_dir,
            "knn",
            "pairs.mode=knn",
            "pairs.k=3",
            "pairs.search_on_ray_from_rows=1",  # the kNN search itself on Ray Data
            "scoring.executor=ray",
        )
    )
    stats = result.manifest["kernel"]
    assert stats["pairs_scored"] == 20 * (3 + 1)
    assert stats["nonzeros"] <= 20 * 4
    assert "utilities" not in result.files  # the raw table stays in the store for knn runs
    assert result.manifest["selected"] == 6


def test_dry_run_plans_without_scoring_or_writing(tmp_path, pool, tiny_model_dir, capsys):
    config = cfg(tmp_path, pool, tiny_model_dir, "dry", "scoring.executor=local")
    assert run_select(config, dry_run=True) is None
    err = capsys.readouterr().err
    assert "plan: 400 pairs and 20 plain targets to score" in err
    assert "tokens/s" in err
    assert not (tmp_path / "dry").exists()


def test_knn_search_on_ray_data_equals_local_search(ray_local):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(300, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    other = emb[:40] + 0.01
    for targets, demos, same in ((emb, emb, True), (emb, other, False)):
        local = knn_pairs(targets, demos, 5, same_set=same, block_rows=64)
        on_ray = knn_pairs(targets, demos, 5, same_set=same, block_rows=64, map_fn=task_map)
        np.testing.assert_array_equal(local[0], on_ray[0])
        np.testing.assert_array_equal(local[1], on_ray[1])


@pytest.mark.parametrize(
    ("model", "store", "message"),
    [
        ("no-model", "store", "model: model.path does not exist: "),  # the actor's constructor
        (None, "file/store", "store: cannot write block "),  # the actor's first write
    ],
    ids=["model-missing-on-the-node", "store-unwritable-from-the-node"],
)
def test_an_actors_error_reaches_the_driver_as_one_line(
    tmp_path, tiny_model_dir, ray_local, model, store, message
):
    (tmp_path / "file").write_text("a file where a directory should be")
    job = WorkerSpec(
        ModelConfig(path=str(tmp_path / model) if model else tiny_model_dir),
        TemplatesConfig(),
        ScoringConfig(executor="ray"),
        64,
        str(tmp_path / store),
        "key",
    )
    sets = {POOL: TextSet(["a", "b"], ["Say a.", "Say b."], [" a", " b"])}
    scored = []
    with pytest.raises(DeliftError, match=f"^{message}.*\\(in a scoring actor\\)$"):
        score_blocks(job, sets, plan_plain(np.arange(2), 1), scored.append)
    assert scored == []
