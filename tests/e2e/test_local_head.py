"""Without RAY_ADDRESS, a run joins the Ray head started on this machine with `ray start`, as a
plain `ray.init()` would (Ray refuses `num_cpus` there), and leaves that head running."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import WORDS, write_word_pool
from tests.e2e.raycluster import RayHead

pytestmark = pytest.mark.timeout(420)

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "pipelines" / "configs" / "instruction.yaml"
JOINED = "[delift-ray] ray: joining the Ray head started on this machine at "


@pytest.fixture
def head() -> Iterator[RayHead]:
    """A `ray start --head` of our own, recorded where ray.init() looks: the default Ray temp dir,
    here <RAY_TMPDIR>/ray (so no other head on this machine is seen); killed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="rl", dir="/tmp"))  # Ray's socket paths must stay short
    (root / "ray").mkdir()
    cluster = RayHead.create(root / "ray")
    cluster.env["RAY_TMPDIR"] = str(root)
    try:
        cluster.start()
        yield cluster
    finally:
        left = cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    assert not left, f"processes of the test head still alive: {left}"


def get_json(head: RayHead, path: str) -> Any:
    with urllib.request.urlopen(f"{head.dashboard_url}{path}", timeout=10) as response:
        return json.loads(response.read())


def sessions(head: RayHead) -> list[str]:
    """Ray session directories in the head's temp dir (an embedded Ray would add one)."""
    return sorted(p.name for p in head.temp_dir.glob("session_2*"))


def test_a_run_without_ray_address_joins_the_local_head(
    head: RayHead, tiny_model_dir: str, tmp_path: Path
) -> None:
    pool = write_word_pool(tmp_path / "pool.jsonl", WORDS[:5])
    out = tmp_path / "out"
    settings = [f"data.path={pool}", f"model.path={tiny_model_dir}", f"output_dir={out}"]
    settings += ["budget=2", "scoring.executor=local", "selection.distributed=randgreedi"]
    args = [sys.executable, "-m", "delift_ray.cli", "select", "--config", str(CONFIG)]
    before = sessions(head)
    assert "RAY_ADDRESS" not in head.env
    proc = subprocess.run(
        [*args, *(a for s in settings for a in ("--set", s))],
        capture_output=True,
        text=True,
        env=head.env,
        cwd=REPO,
        timeout=360,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert "with method=delift stage=instruction (FL, randgreedi greedy)" in proc.stdout
    assert JOINED in proc.stderr, proc.stderr[-5000:]

    # The head ran this driver's job (RandGreeDi's tasks), and no embedded Ray started beside it.
    drivers = [
        job
        for job in get_json(head, "/api/jobs/")
        if job.get("type") == "DRIVER" and str(out) in (job.get("entrypoint") or "")
    ]
    assert [job["status"] for job in drivers] == ["SUCCEEDED"], drivers
    assert sessions(head) == before
    # ... and is still up: the driver only disconnected.
    assert get_json(head, "/api/version") and head.pids()
    status = head.ray("status", f"--address=127.0.0.1:{head.ports['--port']}")
    assert status.returncode == 0 and "Active:" in status.stdout, status.stdout + status.stderr
