"""A real multi-node Ray on one machine: a `ray start` head and worker nodes on loopback, one
advertising a GPU. Runs join it with RAY_ADDRESS, as on a cluster; the manifest's
kernel.blocks_per_node says which node's actors scored each block."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from delift_ray.config import load_config
from delift_ray.workflows.select import run_select
from tests.conftest import WORDS, write_word_pool
from tests.e2e.raycluster import MARKER, RayHead, RayWorker, marked_pids

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[2]
# A lost node is declared dead after a few seconds, not Ray's default 15-30 s (shorter ones
# declare a node dead while a loaded machine is still starting it).
FAST_HEALTH_CHECKS = {
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "2000",
    "RAY_health_check_failure_threshold": "3",
}


class Cluster:
    """The head (1 CPU: room for the driver's own work, not for a 2-CPU scoring actor) and its
    worker nodes by name."""

    def __init__(self, head: RayHead) -> None:
        self.head = head
        self.workers: dict[str, RayWorker] = {}

    def add(self, nodes: dict[str, tuple[int, int]]) -> dict[str, str]:
        """Start worker nodes (name: (CPUs, GPUs)) one after the other (started side by side
        on a loaded machine, one missed Ray's 30 s registration wait), wait until the head lists
        each one alive; their node ids by name."""
        for name, (cpus, gpus) in nodes.items():
            self.workers[name] = self.head.worker(name)  # known before it starts: stop() kills it
            self.workers[name].start(cpus, gpus)
        deadline = time.monotonic() + 60
        while True:
            ids = {n: i for i, r in self.resources().items() for n in nodes if n in r}
            if len(ids) == len(nodes):
                return ids
            assert time.monotonic() < deadline, f"worker nodes never joined: {nodes}"
            time.sleep(0.5)

    def resources(self) -> dict[str, dict[str, float]]:
        """Each alive node's total resources, by node id."""
        return {n["node_id"]: n["resources_total"] for n in self.nodes()}

    def nodes(self) -> list[dict[str, Any]]:
        """Alive nodes, from the head's state API."""
        listed = self.head.ray(
            "list", "nodes", "--format=json", f"--address={self.head.dashboard_url}"
        )
        assert listed.returncode == 0, listed.stderr[-2000:]
        return [n for n in json.loads(listed.stdout) if n["state"] == "ALIVE"]

    def stop(self) -> list[int]:
        """Kill every worker node, then stop the head; returns any process still alive."""
        left = [pid for w in self.workers.values() for pid in w.kill()]
        return left + self.head.stop(grace=3)


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Cluster, dict[str, str]]]:
    """The cluster and the node ids of its worker nodes: "gpu" (2 CPUs, 1 GPU), "cpu" and
    "spare" (2 CPUs each; the spare gives a lost scoring actor room to start again)."""
    root = Path(tempfile.mkdtemp(prefix="rm", dir="/tmp"))  # Ray's socket paths must stay short
    head = RayHead.create(root)
    head.env.update(FAST_HEALTH_CHECKS)
    c = Cluster(head)
    try:
        head.start(num_cpus=1)
        ids = c.add({"gpu": (2, 1), "cpu": (2, 0), "spare": (2, 0)})
        yield c, ids
    finally:
        left = c.stop()
        shutil.rmtree(root, ignore_errors=True)
    assert not left, f"processes of the test cluster still alive: {left}"


def settings(tmp_path: Path, pool: Path, model: str, name: str, store: str) -> list[str]:
    return [
        f"data.path={pool}",
        f"model.path={model}",
        f"output_dir={tmp_path / name}",
        f"store.uri={tmp_path / store}",
        "budget=4",
        "scoring.demos_per_block=1",
        "scoring.max_batch_size=4",
    ]


def select_on(c: Cluster, args: list[str]) -> tuple[dict[str, Any], list[str]]:
    """`delift-ray select` as a driver on the cluster (RAY_ADDRESS); its manifest and picks."""
    env = {**c.head.env, "RAY_ADDRESS": c.head.address}
    out = Path(next(a.split("=", 1)[1] for a in args if a.startswith("output_dir=")))
    config = out.with_suffix(".yaml")
    config.write_text("{}\n")  # every setting comes from --set
    cmd = [sys.executable, "-m", "delift_ray.cli", "select", f"--config={config}"]
    cmd += [f"--set={a}" for a in args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    manifest = json.loads((out / "manifest.json").read_text())
    return manifest, pq.read_table(out / "selection.parquet")["id"].to_pylist()


def local_picks(args: list[str]) -> list[str]:
    """The selection of the same run scored in-process (no Ray)."""
    result = run_select(load_config(None, [*args, "scoring.executor=local"]))
    assert result is not None
    return pq.read_table(result.files["selection"])["id"].to_pylist()


def pair_blocks(store: Path) -> list[Path]:
    return list(store.glob("*/pairs/*.parquet"))


def test_gpu_actors_run_on_the_gpu_node(
    cluster: tuple[Cluster, dict[str, str]], tiny_model_dir: str, tmp_path: Path
) -> None:
    c, ids = cluster
    pool = write_word_pool(tmp_path / "pool.jsonl", WORDS[:5])
    base = settings(tmp_path, pool, tiny_model_dir, "gpu", "gpu-store")
    ray = ["scoring.executor=ray", "scoring.actors=1", "scoring.gpus_per_actor=1"]
    manifest, picks = select_on(c, [*base, *ray])
    kernel = manifest["kernel"]
    assert kernel["pairs_scored"] == 10 * 10
    # Every block (d0 and pairs) was scored by an actor on the one node with a GPU, though the
    # head and the CPU node had free CPUs for it.
    assert kernel["blocks_per_node"] == {ids["gpu"]: kernel["blocks"]}
    local = [*settings(tmp_path, pool, tiny_model_dir, "local", "local-store")]
    assert picks == local_picks(local)


def test_actors_on_two_nodes_fill_one_store(
    cluster: tuple[Cluster, dict[str, str]], tiny_model_dir: str, tmp_path: Path
) -> None:
    c, ids = cluster
    pool = write_word_pool(tmp_path / "pool.jsonl", WORDS[:5])
    # Two actors of 2 CPUs: the head (1 CPU) holds neither, so two worker nodes hold one each.
    ray = ["scoring.executor=ray", "scoring.actors=2", "scoring.cpus_per_actor=2"]
    manifest, picks = select_on(c, [*settings(tmp_path, pool, tiny_model_dir, "a", "s"), *ray])
    per_node = manifest["kernel"]["blocks_per_node"]
    # d0 and pairs run on pools of their own, so the blocks come from two or three worker nodes.
    assert len(per_node) >= 2 and set(per_node) <= set(ids.values()), per_node
    assert len(pair_blocks(tmp_path / "s")) == 10  # one block per demonstration, in one store
    again, picks_again = select_on(c, [*settings(tmp_path, pool, tiny_model_dir, "b", "s"), *ray])
    assert again["kernel"]["pairs_scored"] == 0
    assert again["kernel"]["blocks"] == 0
    assert picks_again == picks


def test_worker_node_lost_mid_scoring_keeps_the_selection(
    cluster: tuple[Cluster, dict[str, str]], tiny_model_dir: str, tmp_path: Path
) -> None:
    c, ids = cluster
    pool = write_word_pool(tmp_path / "pool.jsonl", WORDS[:10])
    store = tmp_path / "s"
    killed: list[str] = []

    def kill_a_scoring_node() -> None:
        deadline = time.monotonic() + 200
        while len(pair_blocks(store)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        for name, worker in c.workers.items():
            scoring = [p for p in marked_pids(MARKER, worker.env[MARKER]) if is_block_worker(p)]
            if scoring:
                assert not worker.kill()
                killed.append(name)
                return

    killer = threading.Thread(target=kill_a_scoring_node)
    killer.start()
    ray = ["scoring.executor=ray", "scoring.actors=2", "scoring.cpus_per_actor=2"]
    base = settings(tmp_path, pool, tiny_model_dir, "a", "s")
    manifest, picks = select_on(c, [*base, *ray])
    killer.join()
    assert killed, "no node with a scoring actor was found to kill"
    kernel = manifest["kernel"]
    # Every pair's block reported once (the lost node's finished blocks are not scored again),
    # and the blocks after the loss came from the nodes still alive.
    assert kernel["pairs_scored"] == 20 * 20
    assert sum(kernel["blocks_per_node"].values()) == kernel["blocks"]
    assert set(kernel["blocks_per_node"]) - {ids[killed[0]]}
    assert ids[killed[0]] not in c.resources()
    assert picks == local_picks(settings(tmp_path, pool, tiny_model_dir, "local", "local-store"))


def is_block_worker(pid: int) -> bool:
    """True for a Ray actor process scoring blocks (titled after BatchedBlockWorker)."""
    try:
        return b"BatchedBlockWorker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
