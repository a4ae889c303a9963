"""Faults with real parts: a scoring actor killed mid-run, a driver killed mid-scoring, a full
or read-only output disk. Nothing is lost, nothing half-written, the selection is unchanged."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import psutil
import pyarrow.parquet as pq
import pytest

from delift_ray.config import load_config
from delift_ray.errors import DeliftError
from delift_ray.workflows.select import run_select


@pytest.fixture
def pool(word_pool):
    return word_pool(10)


def settings(tmp_path, pool, model, name):
    return [
        f"data.path={pool}",
        f"model.path={model}",
        f"output_dir={tmp_path / name}",
        f"store.uri={tmp_path / (name + '-store')}",
        "budget=5",
        "scoring.demos_per_block=1",
        "scoring.max_batch_size=4",
    ]


def picks(result):
    return pq.read_table(result.files["selection"])["id"].to_pylist()


def pair_blocks(store):
    return list(store.glob("*/pairs/*.parquet"))


def test_killed_scoring_actor_does_not_change_the_selection(
    tmp_path, pool, tiny_model_dir, ray_local
):
    killed = []

    def kill_one_actor():
        deadline = time.monotonic() + 120
        while len(pair_blocks(tmp_path / "ray-store")) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        for proc in psutil.process_iter(["pid", "cmdline"]):
            if "BlockWorker" in " ".join(proc.info["cmdline"] or []):
                os.kill(proc.info["pid"], signal.SIGKILL)
                killed.append(proc.info["pid"])
                return

    killer = threading.Thread(target=kill_one_actor)
    killer.start()
    cfg = [*settings(tmp_path, pool, tiny_model_dir, "ray"), "scoring.executor=ray"]
    cfg.append("scoring.actors=2")
    disturbed = run_select(load_config(None, cfg))
    killer.join()
    assert killed, "no scoring actor was found to kill"
    assert disturbed.manifest["kernel"]["pairs_scored"] == 20 * 20
    calm = run_select(
        load_config(
            None, [*settings(tmp_path, pool, tiny_model_dir, "calm"), "scoring.executor=local"]
        )
    )
    assert picks(disturbed) == picks(calm)


def test_killed_driver_resumes_on_ray_with_only_missing_blocks(
    tmp_path, pool, tiny_model_dir, ray_local
):
    config = tmp_path / "run.yaml"
    config.write_text("scoring: {executor: ray, actors: 1}\n")
    args = [f"--set={s}" for s in settings(tmp_path, pool, tiny_model_dir, "drv")]
    cmd = [sys.executable, "-m", "delift_ray.cli", "select", "--config", str(config), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    store = tmp_path / "drv-store"
    deadline = time.monotonic() + 180
    while len(pair_blocks(store)) < 3:
        assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no blocks written in time"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done = sum(pq.read_table(p).num_rows for p in pair_blocks(store))
    assert 0 < done < 400

    # Started again (in this process, on the test session's Ray): only the missing pairs.
    again = settings(tmp_path, pool, tiny_model_dir, "drv")
    resumed = run_select(load_config(config, again))
    assert resumed.manifest["kernel"]["pairs_scored"] == 400 - done
    calm = run_select(
        load_config(
            None, [*settings(tmp_path, pool, tiny_model_dir, "calm"), "scoring.executor=local"]
        )
    )
    assert picks(resumed) == picks(calm)


@contextmanager
def tmpfs(path, options):
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)])
    if mounted.returncode != 0:
        pytest.skip("mounting a tmpfs needs root (CI and the dev machines run as root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_full_disk_is_a_clear_error_and_leaves_no_partial_outputs(tmp_path):
    with tmpfs(tmp_path / "small", "size=24k") as disk:
        cfg = load_config(
            "pipelines/configs/instruction.yaml",
            ["method=random", f"output_dir={disk / 'out'}"],
        )
        with pytest.raises(DeliftError, match=r"output: cannot write to .*No space left on device"):
            run_select(cfg)
        assert list((disk / "out").iterdir()) == []


def test_read_only_disk_fails_before_any_work(tmp_path):
    with tmpfs(tmp_path / "ro", "ro,size=1m") as disk:
        cfg = load_config(
            "pipelines/configs/instruction.yaml", ["method=random", f"output_dir={disk / 'out'}"]
        )
        with pytest.raises(DeliftError, match=r"output: cannot write to .*Read-only file system"):
            run_select(cfg)
