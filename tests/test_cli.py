"""The `delift-ray` command: one-line errors with exit code 2, a summary on success."""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

CLI = [sys.executable, "-m", "delift_ray.cli"]
POOL = "pipelines/data/demo_pool.jsonl"


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "budget=1.5"], "config: budget 1.5 is a fraction > 1"),
        (["--set", "data.colour=red"], "config: unknown key data.colour"),
        (["--set", "budget=100000"], "config: budget 100000 is larger than the pool (290"),
        (["--set", "data.path=missing.jsonl"], "config: data.path does not exist"),
        (["--set", "model.path=/no/such/model"], "model: model.path does not exist"),
    ],
)
def test_errors_are_one_line_with_exit_code_2(tmp_path, extra, message):
    proc = run(
        "select",
        "--config",
        "pipelines/configs/instruction.yaml",
        "--set",
        f"output_dir={tmp_path}/out",
        *extra,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("delift-ray: error: ") and message in lines[-1], proc.stderr
    assert "Traceback" not in proc.stderr


def test_random_selection_prints_summary_and_writes_outputs(tmp_path):
    out = tmp_path / "out"
    proc = run(
        "select",
        "--config",
        "pipelines/configs/instruction.yaml",
        "--set",
        "method=random",
        "--set",
        f"output_dir={out}",
    )
    assert proc.returncode == 0, proc.stderr
    assert "selected 87 of 290 examples (30%) with method=random" in proc.stdout
    assert "rejected 9, exact duplicates 10" in proc.stdout
    assert f"outputs in {out}/" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json",
        "pool_ids.parquet",
        "rejects.parquet",
        "selection.parquet",
        "subset.jsonl",
    ]


def test_pool_without_usable_rows_points_to_a_rejects_file_that_exists(tmp_path):
    pool = tmp_path / "bad.jsonl"
    pool.write_text('{"instruction": "a"}\nnot json\n')
    out = tmp_path / "out"
    proc = run(
        "select",
        "--config",
        "pipelines/configs/instruction.yaml",
        "--set",
        f"data.path={pool}",
        "--set",
        f"output_dir={out}",
    )
    assert proc.returncode == 2
    assert "no usable rows (see rejects.parquet)" in proc.stderr

    rejects = pq.read_table(out / "rejects.parquet").to_pydict()
    assert rejects["row"] == [1, 2]


def test_each_command_checks_only_the_config_sections_it_uses(tmp_path):
    bad = ["--config", "pipelines/configs/instruction.yaml", "--set", "train.lora_dropout=1.5"]
    out = ["--set", f"output_dir={tmp_path}/out"]
    proc = run("select", *bad, *out, "--set", "method=random", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "plan: method random, select 87 of 290" in proc.stdout
    for command in ("train", "compare"):
        proc = run(command, *bad, *out)
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines()[-1] == (
            "delift-ray: error: config: train.lora_dropout must be in [0, 1)"
        )
