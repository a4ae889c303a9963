"""The `delift-ray` command: one-line errors with exit code 2 (usage, config) or 1 (a failed
run), a summary on success, --version, -v / -q, and `config`."""

from __future__ import annotations

import ast
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from delift_ray import cli, logs
from delift_ray.config import COMMAND_SECTIONS, load_config
from delift_ray.errors import ConfigError, DeliftError
from delift_ray.models import demo_model
from delift_ray.progress import ProgressBar

CLI = [sys.executable, "-m", "delift_ray.cli"]
POOL = "pipelines/data/demo_pool.jsonl"
CONFIG = "pipelines/configs/instruction.yaml"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Undo what an in-process main() sets up (handler, levels, TRANSFORMERS_VERBOSITY)."""
    root = logging.getLogger(logs.ROOT)
    saved = root.handlers[:], root.level, root.propagate
    others = {name: logging.getLogger(name).level for name in logs.THIRD_PARTY}
    monkeypatch.setattr(logs, "_third_party_level", logs._third_party_level)
    monkeypatch.setattr(logs, "_transformers_env", logs._transformers_env)
    monkeypatch.delenv("TRANSFORMERS_VERBOSITY", raising=False)
    yield
    root.handlers[:], root.level, root.propagate = saved
    for name, level in others.items():
        logging.getLogger(name).setLevel(level)


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize(
    ("extra", "message", "code"),
    [
        (["--set", "budget=1.5"], "config: budget 1.5 is a fraction > 1", 2),
        (["--set", "data.colour=red"], "config: unknown key data.colour", 2),
        (["--set", "budget=100000"], "config: budget 100000 is larger than the pool (290", 2),
        (["--set", "data.path=missing.jsonl"], "config: data.path does not exist", 2),
        (["--set", "model.path=/no/such/model"], "model: model.path does not exist", 1),
    ],
)
def test_errors_are_one_line_with_their_exit_code(tmp_path, extra, message, code):
    proc = run(
        "select",
        "--config",
        "pipelines/configs/instruction.yaml",
        "--set",
        f"output_dir={tmp_path}/out",
        *extra,
    )
    assert proc.returncode == code
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
    assert proc.returncode == 1  # a data error: the run failed, the command line was fine
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


# ---------------------------------------------------------------------------------------------
# exit codes: 2 usage and config, 1 a failed run, 130 Ctrl-C, tracebacks for the unexpected


def test_version_prints_the_installed_version():
    proc = run("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"delift-ray {metadata.version('delift-ray')}\n"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["nosuch"],
        ["select"],
        ["select", "--config", CONFIG, "-v", "-q"],
        ["config", "--config", CONFIG, "--for", "demo-model"],
    ],
    ids=["no-command", "unknown-command", "no-config", "v-and-q", "bad-for"],
)
def test_usage_errors_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as stopped:
        cli.main(argv)
    assert stopped.value.code == 2
    assert "error: " in capsys.readouterr().err


def stand_in(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    """Make `delift-ray demo-model` raise `error` where it would build the model."""

    def failing(*args: object) -> None:
        raise error

    monkeypatch.setattr(demo_model, "ensure_demo_model", failing)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigError("config: budget must be > 0, got 0"), 2),
        (DeliftError("store: cannot write to /x: Read-only file system"), 1),
        (DeliftError("a scoring actor needs 1 GPUs, more than this Ray cluster has"), 1),
    ],
    ids=["config", "store", "ray"],
)
def test_a_delift_error_exits_with_its_kinds_code(monkeypatch, capsys, error, code):
    stand_in(monkeypatch, error)
    assert cli.main(["demo-model"]) == code
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == f"delift-ray: error: {error}" and "Traceback" not in err


def test_ctrl_c_exits_130(monkeypatch, capsys):
    stand_in(monkeypatch, KeyboardInterrupt())
    assert cli.main(["demo-model"]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "delift-ray: interrupted"


STAND_IN = """
import os, signal, sys, time
import delift_ray.models.demo_model as demo
from delift_ray.cli import main
def stand_in(*args):
    {body}
demo.ensure_demo_model = stand_in
sys.exit(main(["demo-model", "-q"]))
"""


@pytest.mark.parametrize(
    ("body", "code", "last"),
    [
        ("os.kill(os.getpid(), signal.SIGINT); time.sleep(30)", 130, "delift-ray: interrupted"),
        ("raise RuntimeError('boom')", 1, "RuntimeError: boom"),
    ],
    ids=["sigint", "unexpected"],
)
def test_a_real_sigint_and_an_unexpected_error_in_a_subprocess(body, code, last):
    script = STAND_IN.format(body=body)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert proc.returncode == code, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == last
    assert ("Traceback (most recent call last)" in proc.stderr) == (code == 1)  # kept for bugs


def literal_start(node: ast.expr) -> str | None:
    """How a message expression starts, where that is written in the source."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values:
        return literal_start(node.values[0])
    if isinstance(node, ast.IfExp):
        return literal_start(node.orelse)
    return None


def test_every_config_message_is_a_config_error_and_only_those():
    """The exit code follows the class: "config: ..." messages must be raised as ConfigError."""
    found = []
    for path in sorted((REPO / "delift_ray").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args):
                continue
            start = literal_start(node.args[0])
            if node.func.id in ("DeliftError", "ConfigError") and start is not None:
                found.append((f"{path.relative_to(REPO)}:{node.lineno}", node.func.id, start))
    wrong = [f for f in found if (f[1] == "ConfigError") != f[2].startswith("config:")]
    assert len(found) > 50 and not wrong, wrong


# ---------------------------------------------------------------------------------------------
# logging: status lines on stderr ("[delift-ray] ..."), results on stdout; -v and -q


def refresh_argv(tmp_path: Path, *flags: str) -> list[str]:
    config = "pipelines/configs/refresh.yaml"
    sets = ["method=random", f"refresh.root={tmp_path / 'root'}", f"data.path={POOL}"]
    return ["refresh", *flags, "--config", config, *(a for s in sets for a in ("--set", s))]


def test_status_lines_go_to_stderr_results_to_stdout_and_v_q_set_the_level(tmp_path, capsys):
    assert cli.main(refresh_argv(tmp_path)) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        f"[delift-ray] refresh: 290 new of 290 usable rows; previous run: none; "
        f"store: {tmp_path / 'root' / 'store'}"
    ]
    assert out.startswith("selected 87 of 290 examples (30%) with method=random")

    assert cli.main(refresh_argv(tmp_path, "-q")) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.startswith("selected 87 of 290 examples")

    assert cli.main(refresh_argv(tmp_path, "--verbose")) == 0
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert lines[0].startswith("[delift-ray] debug: config pipelines/configs/refresh.yaml with 3")
    assert lines[1].startswith("[delift-ray] refresh: 0 new of 290 usable rows; previous run: ")
    assert out.startswith("selected 87 of 290 examples")


def test_levels_of_ours_ray_and_transformers_and_progress_bars_per_flag():
    want = {
        logs.QUIET: (logging.WARNING, logging.WARNING, "warning", False),
        logs.NORMAL: (logging.INFO, logging.WARNING, "warning", True),
        logs.VERBOSE: (logging.DEBUG, logging.INFO, "info", True),
    }
    for verbosity, (ours, theirs, env, bars) in want.items():
        logs.configure(verbosity)
        assert logging.getLogger("delift_ray.workflows.select").getEffectiveLevel() == ours
        assert [logging.getLogger(n).level for n in ("ray", "transformers")] == [theirs] * 2
        assert logs.third_party_level() == theirs and os.environ["TRANSFORMERS_VERBOSITY"] == env
        with ProgressBar("greedy", 3) as bar:
            assert bar._bar.disable is not bars
            bar.update_to(2, 4)  # a bar that is off still takes its updates
        handlers = logging.getLogger(logs.ROOT).handlers
        assert len([h for h in handlers if isinstance(h, logs._StderrHandler)]) == 1


def test_a_users_transformers_verbosity_is_kept(monkeypatch):
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "error")
    logs.configure(logs.VERBOSE)
    assert os.environ["TRANSFORMERS_VERBOSITY"] == "error"


def test_a_warning_reads_as_before(capsys):
    logs.configure(logs.QUIET)
    logging.getLogger("delift_ray.distributed.resources").warning("x needs 1 GPUs; waiting")
    assert capsys.readouterr().err == "[delift-ray] warning: x needs 1 GPUs; waiting\n"


# ---------------------------------------------------------------------------------------------
# `delift-ray config`: the resolved, validated config as YAML


def test_config_prints_the_config_a_run_would_use(tmp_path, capsys):
    sets = ["budget=0.2", "pairs.mode=knn", "seed=3", f"output_dir={tmp_path / 'out'}"]
    assert cli.main(["config", "--config", CONFIG, *(a for s in sets for a in ("--set", s))]) == 0
    printed = capsys.readouterr().out
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text(printed)
    assert load_config(resolved) == load_config(CONFIG, sets)  # every key, defaults included
    raw = yaml.safe_load(printed)
    assert (raw["budget"], raw["pairs"]["mode"], raw["seed"]) == (0.2, "knn", 3)
    assert list(raw)[:3] == ["data", "target", "existing"]  # the config's own order
    assert "  with_example: |\n" in printed  # templates stay readable


def test_config_for_a_command_validates_only_its_sections(capsys):
    bad = ["--config", CONFIG, "--set", "train.lora_dropout=1.5"]
    assert cli.main(["config", *bad, "--for", "select"]) == 0
    assert "  lora_dropout: 1.5\n" in capsys.readouterr().out
    for argv in (["config", *bad], ["config", *bad, "--for", "train"]):
        assert cli.main(argv) == 2
        assert capsys.readouterr().err.strip().splitlines()[-1] == (
            "delift-ray: error: config: train.lora_dropout must be in [0, 1)"
        )
    assert set(cli.CONFIG_COMMANDS) == set(COMMAND_SECTIONS)
