"""The block store in a real run: re-runs score nothing, lost or corrupt blocks are rescored,
and a run killed mid-scoring resumes with only the missing pairs and the same selection."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from delift_ray.config import load_config
from delift_ray.workflows.select import run_select


@pytest.fixture
def pool(word_pool):
    return word_pool(8)


def overrides(tmp_path, pool, model):
    return [
        f"data.path={pool}",
        f"model.path={model}",
        f"output_dir={tmp_path / 'out'}",
        f"store.uri={tmp_path / 'store'}",
        "budget=5",
        "scoring.executor=local",
        "scoring.demos_per_block=2",
    ]


def run(tmp_path, pool, model, *extra):
    result = run_select(load_config(None, overrides(tmp_path, pool, model) + list(extra)))
    sel = pq.read_table(result.files["selection"]).to_pydict()
    return result.manifest["kernel"], sel


def pair_blocks(tmp_path):
    return sorted((tmp_path / "store").glob("*/pairs/*.parquet"))


def test_rerun_scores_nothing_and_lost_or_corrupt_blocks_are_rescored(
    tmp_path, pool, tiny_model_dir
):
    n = 16
    first, sel = run(tmp_path, pool, tiny_model_dir)
    assert first["pairs_scored"] == n * n and first["pairs_in_store"] == 0

    again, sel2 = run(tmp_path, pool, tiny_model_dir)
    assert again["pairs_scored"] == 0 and again["targets_scored_d0"] == 0
    assert again["pairs_in_store"] == n * n
    assert sel2 == sel

    blocks = pair_blocks(tmp_path)
    lost = pq.read_table(blocks[0]).num_rows
    blocks[0].unlink()
    corrupt = pq.read_table(blocks[1]).num_rows
    data = blocks[1].read_bytes()
    blocks[1].write_bytes(data[: len(data) // 3])
    resumed, sel3 = run(tmp_path, pool, tiny_model_dir)
    assert resumed["blocks_removed_corrupt"] == 1
    assert resumed["pairs_scored"] == lost + corrupt
    assert sel3 == sel


def test_killed_run_resumes_with_only_missing_pairs(tmp_path, pool, tiny_model_dir):
    empty = tmp_path / "empty.yaml"
    empty.write_text("{}\n")
    cmd = [sys.executable, "-m", "delift_ray.cli", "select", "--config", str(empty)]
    cmd += [f"--set={o}" for o in overrides(tmp_path, pool, tiny_model_dir)]
    cmd += ["--set=scoring.demos_per_block=1", "--set=scoring.max_batch_size=4"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while len(pair_blocks(tmp_path)) < 3:
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.monotonic() < deadline, "no blocks written in time"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done = sum(pq.read_table(p).num_rows for p in pair_blocks(tmp_path))
    assert 0 < done < 16 * 16

    resumed, sel = run(tmp_path, pool, tiny_model_dir, "scoring.demos_per_block=1")
    assert resumed["pairs_scored"] == 16 * 16 - done
    fresh_dir = tmp_path / "fresh"
    fresh_dir.mkdir()
    _, fresh = run(fresh_dir, pool, tiny_model_dir)
    # Same picks; values agree up to float noise from different batch compositions.
    assert sel["id"] == fresh["id"]
    np.testing.assert_allclose(sel["gain"], fresh["gain"], rtol=1e-4)
