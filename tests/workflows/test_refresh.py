"""Refresh: versioned runs, an atomic `latest`, and only pairs touching new rows are scored."""

from __future__ import annotations

import os

import pyarrow.parquet as pq
import pytest

from delift_ray.config import DataConfig, load_config
from delift_ray.data.read import read_examples
from delift_ray.workflows.refresh import run_refresh
from tests.conftest import WORDS, write_word_pool


def refresh(tmp_path, pool, model, *extra):
    cfg = load_config(
        None,
        [
            f"data.path={pool}",
            f"model.path={model}",
            f"refresh.root={tmp_path / 'refresh'}",
            "budget=0.3",
            "scoring.executor=local",
            *extra,
        ],
    )
    return run_refresh(cfg)


def picks(result):
    return pq.read_table(result.files["selection"])["id"].to_pylist()


def test_refresh_scores_only_pairs_touching_new_rows(tmp_path, tiny_model_dir):
    pool = tmp_path / "pool.jsonl"
    write_word_pool(pool, WORDS[:10])  # 20 rows
    first = refresh(tmp_path, pool, tiny_model_dir)
    root = tmp_path / "refresh"
    assert first.directory == str(root / "run-0001")
    assert os.readlink(root / "latest") == "run-0001"
    assert first.manifest["kernel"]["pairs_scored"] == 20 * 20
    assert first.manifest["refresh"]["previous_run"] is None

    write_word_pool(pool, WORDS[:11])  # +2 rows (10%)
    second = refresh(tmp_path, pool, tiny_model_dir)
    assert second.directory == str(root / "run-0002")
    assert os.readlink(root / "latest") == "run-0002"
    assert second.manifest["kernel"]["pairs_scored"] == 22 * 22 - 20 * 20
    assert second.manifest["refresh"]["rows_new"] == 2
    assert second.manifest["refresh"]["previous_run"] == str(root / "run-0001")

    third = refresh(tmp_path, pool, tiny_model_dir)
    assert third.manifest["kernel"]["pairs_scored"] == 0
    assert third.manifest["kernel"]["targets_scored_d0"] == 0
    assert picks(third) == picks(second)
    assert (root / "run-0001" / "selection.parquet").exists()  # earlier runs kept


def test_continual_refresh_selects_new_rows_given_previous_selection(tmp_path, tiny_model_dir):
    pool = tmp_path / "pool.jsonl"
    write_word_pool(pool, WORDS[:8])
    first = refresh(tmp_path, pool, tiny_model_dir)
    write_word_pool(pool, WORDS[:11])
    second = refresh(tmp_path, pool, tiny_model_dir, "refresh.mode=continual", "budget=2")
    new_ids = set(read_examples(DataConfig(path=str(pool))).ids) - set(
        pq.read_table(first.files["pool_ids"])["id"].to_pylist()
    )
    assert len(new_ids) == 6
    assert set(picks(second)) <= new_ids and len(picks(second)) == 2
    assert second.manifest["stage"] == "continual"
    assert second.manifest["counts"]["existing"]["usable"] == len(picks(first))
    with pytest.raises(Exception, match="no new rows"):
        refresh(tmp_path, pool, tiny_model_dir, "refresh.mode=continual", "budget=2")
