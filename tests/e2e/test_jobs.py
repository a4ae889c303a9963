"""`ray job submit -- python -m pipelines.<select|compare|eval>` end to end, on a real Ray head
started here."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import WORDS, write_word_pool
from tests.e2e.raycluster import RayHead

pytestmark = pytest.mark.timeout(240)

REPO = Path(__file__).resolve().parents[2]
DEMO_POOL = REPO / "pipelines" / "data" / "demo_pool.jsonl"
POOL_ROWS = 20  # the whole demo pool (310 rows, ~84k pairs) takes minutes to score on 2 cores
MAX_UPLOAD_BYTES = 2 * 2**20
ENDED = {"succeeded": "SUCCEEDED", "failed": "FAILED", "was stopped": "STOPPED"}
PROBE = (
    "import json, os, sys, delift_ray; print('PROBE', json.dumps({'prefix': sys.prefix, "
    "'package': os.path.relpath(delift_ray.__file__), 'files': "
    "{os.path.relpath(os.path.join(d, f)): os.path.getsize(os.path.join(d, f)) "
    "for d, _, fs in os.walk('.') for f in fs}}))"
)


@pytest.fixture(scope="module")
def head() -> Iterator[RayHead]:
    """A Ray head of our own for this module; exactly its processes are killed afterwards."""
    temp_dir = Path(tempfile.mkdtemp(prefix="rj", dir="/tmp"))  # Ray's socket paths must stay short
    cluster = RayHead.create(temp_dir)
    try:
        cluster.start()
        print(f"\nray head up in {cluster.start_seconds:.1f} s")
        yield cluster
    finally:
        left = cluster.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert not left, f"processes of the test head still alive: {left}"


def submit(head: RayHead, submission_id: str, *entrypoint: str) -> subprocess.CompletedProcess[str]:
    """`ray job submit` the repository as working dir; blocks until the job ends."""
    t0 = time.perf_counter()
    run = head.ray(
        "job",
        "submit",
        "--runtime-env-json",
        json.dumps({"env_vars": {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1"}}),
        "--address",
        head.dashboard_url,
        "--submission-id",
        submission_id,
        "--working-dir",
        str(REPO),
        "--",
        *entrypoint,
        timeout=200,
    )
    print(f"\njob {submission_id}: rc={run.returncode} after {time.perf_counter() - t0:.1f} s")
    return run


def submit_ok(head: RayHead, submission_id: str, *entrypoint: str) -> None:
    """`submit`, then check the job exited 0 and Ray recorded it SUCCEEDED."""
    run = submit(head, submission_id, *entrypoint)
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-5000:]
    assert job_status(head, submission_id) == "SUCCEEDED"


def job_status(head: RayHead, submission_id: str) -> str:
    """The job's state as `ray job status` reports it, e.g. "SUCCEEDED"."""
    run = head.ray("job", "status", "--address", head.dashboard_url, submission_id)
    out = run.stdout + run.stderr
    job = re.escape(submission_id)
    said = re.search(
        rf"Job '{job}' (succeeded|failed|was stopped)|Status for job '{job}': (\w+)", out
    )
    assert run.returncode == 0 and said, out
    return ENDED.get(said[1], said[2])


def job_logs(head: RayHead, submission_id: str) -> str:
    """The job's driver output as `ray job logs` returns it."""
    run = head.ray("job", "logs", "--address", head.dashboard_url, submission_id)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def test_job_runs_venv_python_on_a_small_upload(head: RayHead) -> None:
    """The job's `python` is this venv's, it imports the uploaded copy, nothing ignored is sent."""
    run = submit(head, "probe", "python", "-c", PROBE)
    assert run.returncode == 0, run.stdout + run.stderr
    line = next(x for x in run.stdout.splitlines() if x.startswith("PROBE "))
    probe = json.loads(line.removeprefix("PROBE "))
    assert probe["prefix"] == sys.prefix
    assert probe["package"] == "delift_ray/__init__.py"
    files: dict[str, int] = probe["files"]
    ignored = subprocess.run(
        ["git", "-C", str(REPO), "check-ignore", "--stdin"],
        input="\n".join(files),
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    assert ignored == []
    assert not [f for f in files if f.split("/")[0] in {".git", ".venv", ".cache", "runs"}]
    size = sum(files.values())
    print(f"working dir uploaded: {len(files)} files, {size / 2**20:.2f} MiB unpacked")
    assert size < MAX_UPLOAD_BYTES


def test_select_job_succeeds_and_writes_outputs(
    head: RayHead, tiny_model_dir: str, tmp_path: Path
) -> None:
    """The documented launch command runs a selection on the cluster and writes its outputs."""
    pool = tmp_path / "pool.jsonl"
    pool.write_bytes(b"".join(DEMO_POOL.read_bytes().splitlines(keepends=True)[:POOL_ROWS]))
    out = tmp_path / "out"
    submit_ok(
        head,
        "select-ok",
        *("python", "-m", "pipelines.select"),
        *("--config", "pipelines/configs/instruction.yaml"),
        *("--set", f"model.path={tiny_model_dir}", "--set", f"data.path={pool}"),
        *("--set", f"output_dir={out}", "--set", "budget=0.1"),
    )
    manifest = json.loads((out / "manifest.json").read_text())
    usable = manifest["pool_size"]
    assert 0 < usable <= POOL_ROWS
    assert pq.read_table(out / "selection.parquet").num_rows == max(1, round(0.1 * usable))


def test_bad_config_job_fails_with_one_line_error(head: RayHead, tmp_path: Path) -> None:
    """A config error ends the job FAILED, with the CLI's one-line message and no traceback."""
    run = submit(
        head,
        "select-bad",
        *("python", "-m", "pipelines.select"),
        *("--config", "pipelines/configs/instruction.yaml"),
        *("--set", "method=bogus", "--set", f"output_dir={tmp_path / 'out'}"),
    )
    assert run.returncode != 0
    assert job_status(head, "select-bad") == "FAILED"
    logs = job_logs(head, "select-bad")
    errors = [x for x in logs.splitlines() if x.startswith("delift-ray: error:")]
    assert len(errors) == 1 and errors[0].startswith("delift-ray: error: config: "), logs
    assert "bogus" in errors[0]
    assert "Traceback" not in logs


def test_compare_train_and_eval_jobs_run_on_the_cluster(
    head: RayHead, tiny_model_dir: str, tmp_path: Path
) -> None:
    """`pipelines.compare` selects, fine-tunes with Ray Train and evaluates on Ray Data actors
    inside a job; `pipelines.train` and `pipelines.eval`, submitted one after the other on the
    full arm's subset with its seed, reproduce that arm's model and metrics exactly."""
    pool = write_word_pool(tmp_path / "pool.jsonl", WORDS[:8])
    test = write_word_pool(tmp_path / "test.jsonl", WORDS[8:])  # inputs the pool never has
    out = tmp_path / "cmp"
    config = tmp_path / "compare.yaml"
    config.write_text(
        f"data: {{path: {pool}}}\nmodel: {{path: {tiny_model_dir}}}\nbudget: 0.5\n"
        "train: {epochs: 1, batch_size: 4, max_length: 64, lr: 0.01, seed: 0}\n"
        f"eval: {{test: {{path: {test}}}, max_new_tokens: 4, batch_size: 4}}\n"
        f"compare: {{methods: full}}\noutput_dir: {out}\n"  # one arm: tests/workflows has more
    )
    submit_ok(head, "compare-ok", "python", "-m", "pipelines.compare", "--config", str(config))
    rows = {r["method"]: r for r in csv.DictReader((out / "comparison.csv").open())}
    assert set(rows) == {"full"} and float(rows["full"]["selected"]) == 16
    arm = json.loads((out / "full" / "seed0" / "train_manifest.json").read_text())
    assert arm["rows"] == 16 and arm["losses"]
    arm_eval = json.loads((out / "full" / "seed0" / "eval" / "eval.json").read_text())
    assert arm_eval["rows"] == 6

    trained = tmp_path / "train-job"
    submit_ok(
        head,
        "train-ok",
        *("python", "-m", "pipelines.train", "--config", str(config)),
        *("--set", f"train.subset={out / 'full' / 'select'}", "--set", f"output_dir={trained}"),
    )
    manifest = json.loads((trained / "train_manifest.json").read_text())
    assert manifest["rows"] == 16 and manifest["losses"] == arm["losses"]
    evaluated = tmp_path / "eval-job"
    submit_ok(
        head,
        "eval-ok",
        *("python", "-m", "pipelines.eval", "--config", str(config)),
        *(
            "--set",
            f"eval.model_path={manifest['output_model']}",
            "--set",
            f"output_dir={evaluated}",
        ),
    )
    again = json.loads((evaluated / "eval.json").read_text())
    assert again["rows"] == 6 and again["metrics"] == arm_eval["metrics"]
    assert pq.read_table(evaluated / "eval_rows.parquet").num_rows == 6
