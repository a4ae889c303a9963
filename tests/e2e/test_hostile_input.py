"""Hostile input through the real CLI: every kind of bad input ends in one error line (exit code
2 for a config error, 1 for any other; no traceback) or in rejects.parquet with its reason, and
every good row comes through intact.

The corpus is built in tmp_path. Runs use method=full (nothing is scored, every usable row is
selected, so good rows can be counted) or method=random, except where the model is the point.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "pipelines" / "configs" / "instruction.yaml"
ERROR = "delift-ray: error: "


def good(i: int, **extra: object) -> dict[str, object]:
    return {"instruction": f"Reverse word {i}.", "input": f"w{i}", "output": f"{i}w", **extra}


def jline(obj: object) -> bytes:
    return json.dumps(obj).encode()


def write_pool(path: Path, rows: list[dict[str, object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(jline(r) + b"\n" for r in rows))
    return path


def select(
    *overrides: str, config: Path = CONFIG, command: str = "select"
) -> subprocess.CompletedProcess[str]:
    """`delift-ray <command> --config ... --set ...` in a subprocess, from the repository root."""
    args = [sys.executable, "-m", "delift_ray.cli", command, "--config", str(config)]
    for item in overrides:
        args += ["--set", item]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO, timeout=240)


def error_line(proc: subprocess.CompletedProcess[str], code: int) -> str:
    """The message of a run that failed the expected way: exit `code` (2 config, 1 the rest),
    one error line, no traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == code, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(ERROR), proc.stderr
    return last[len(ERROR) :]


def run_full(data: Path, out: Path, *overrides: str) -> dict[str, object]:
    """A method=full run that must succeed; returns its manifest."""
    proc = select(f"data.path={data}", "method=full", "budget=1.0", f"output_dir={out}", *overrides)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    return json.loads((out / "manifest.json").read_text())


def rejects(out: Path) -> dict[tuple[str, int], str]:
    table = pq.read_table(out / "rejects.parquet")
    return {(Path(r["source"]).name, r["row"]): r["reason"] for r in table.to_pylist()}


# ---------------------------------------------------------------------------------------------
# rows: each bad kind goes to rejects with its reason, every good row is kept

# (kind, JSONL line, the start of the reject reason it must get)
BAD_LINES = [
    ("malformed JSON", b'{"instruction": "a", "output": "b"', "invalid JSON: Expecting ','"),
    ("not an object", b"[1, 2]", "not a JSON object (got list)"),
    (
        "wrong column type",
        jline({"instruction": 5, "output": "x"}),
        "field 'instruction' must be a string, got int",
    ),
    (
        "object for text",
        jline({"instruction": "a", "input": {"k": 1}, "output": "b"}),
        "field 'input' must be a string, got dict",
    ),
    (
        "NaN literal",
        b'{"instruction": NaN, "output": "b"}',
        "field 'instruction' must be a string, got float",
    ),
    ("empty string", jline({"instruction": "a", "output": ""}), "empty response"),
    ("whitespace string", jline({"instruction": " \t", "output": "b"}), "empty instruction"),
    ("missing column", jline({"instruction": "q"}), "missing field 'output'"),
    ("null value", jline({"instruction": "a", "output": None}), "field 'output' is null"),
    (
        "NUL byte (escaped)",
        jline({"instruction": "a\x00b", "output": "c"}),
        "field 'instruction' contains a NUL byte",
    ),
    (
        "NUL byte (raw)",
        b'{"instruction": "a\x00b", "output": "c"}',
        "invalid JSON: Invalid control character",
    ),
    ("invalid UTF-8", b'{"instruction": "caf\xe9", "output": "x"}', "invalid UTF-8 at byte 20"),
    (
        "unpaired surrogate",
        b'{"instruction": "a", "output": "\\ud800"}',
        "field 'output' contains an unpaired surrogate",
    ),
    ("nested too deeply", b"[" * 100_000 + b"]" * 100_000, "invalid JSON: nested too deeply"),
    (
        "integer over the digit limit",
        b'{"instruction": "a", "output": "b", "n": ' + b"9" * 5000 + b"}",
        "invalid JSON: Exceeds the limit (4300 digits)",
    ),
]


def test_jsonl_bad_rows_are_rejected_with_reasons_and_good_rows_kept(tmp_path: Path) -> None:
    big = good(-1, output="x" * (10 * 2**20))  # a 10 MB row: valid, so kept byte for byte
    extra = good(-2, note={"nested": [1, None]}, instruction_typo="ignored")
    lines: list[bytes] = []
    expected: dict[int, tuple[str, str]] = {}
    for i, (kind, bad, reason) in enumerate(BAD_LINES):
        lines += [jline(good(i)), bad]
        expected[len(lines)] = (kind, reason)
    # then the big row, extra columns, a blank line and two exact duplicates of row 1
    lines += [jline(big), jline(extra), b"", jline(good(0)), jline(good(0))]
    pool = tmp_path / "pool"
    pool.mkdir()
    (pool / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (pool / "b.jsonl").write_bytes(b"")  # an empty file among good ones adds nothing

    manifest = run_full(pool, tmp_path / "out")

    got = rejects(tmp_path / "out")
    assert sorted(got) == [("a.jsonl", row) for row in expected]
    for row, (kind, reason) in expected.items():
        assert got["a.jsonl", row].startswith(reason), (kind, got["a.jsonl", row])
    kept = [good(i) for i in range(len(BAD_LINES))] + [big, extra]
    subset = (tmp_path / "out" / "subset.jsonl").read_bytes().splitlines()
    assert [json.loads(line) for line in subset] == kept
    assert manifest["counts"]["pool"] == {
        "rows_read": len(kept) + len(BAD_LINES) + 2,
        "usable": len(kept),
        "rejected": len(BAD_LINES),
        "duplicates": 2,
    }
    assert pq.read_table(tmp_path / "out" / "selection.parquet").num_rows == len(kept)


def test_parquet_bad_rows_rejected_and_compatible_schemas_unified(tmp_path: Path) -> None:
    pool = tmp_path / "pool"
    pool.mkdir()
    rows = [
        {"instruction": "Reverse word 0.", "input": None, "output": "0w"},
        {"instruction": "a", "input": ["x"], "output": "b"},
        {"instruction": "a\x00", "input": None, "output": "b"},
        {"instruction": "", "input": None, "output": "b"},
        {"instruction": "q", "input": None, "output": None},
        {"instruction": "Reverse word 1.", "input": None, "output": "1w"},
    ]
    schema = pa.schema(
        [("instruction", pa.string()), ("input", pa.list_(pa.string())), ("output", pa.string())]
    )
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), pool / "a.parquet")
    other = [{"instruction": "Reverse word 2.", "output": "2w", "score": 3}]
    pq.write_table(pa.Table.from_pylist(other), pool / "b.parquet")
    pq.write_table(pa.Table.from_pylist(other).slice(0, 0), pool / "c.parquet")  # no rows

    manifest = run_full(pool, tmp_path / "out")

    assert rejects(tmp_path / "out") == {
        ("a.parquet", 2): "field 'input' must be a string, got list",
        ("a.parquet", 3): "field 'instruction' contains a NUL byte",
        ("a.parquet", 4): "empty instruction",
        ("a.parquet", 5): "field 'output' is null",
    }
    subset = pq.read_table(tmp_path / "out" / "subset.parquet")
    assert subset.schema.names == ["instruction", "input", "output", "score"]
    assert subset.column("output").to_pylist() == ["0w", "1w", "2w"]
    assert manifest["counts"]["pool"]["usable"] == 3


# ---------------------------------------------------------------------------------------------
# files: unusable inputs stop the run with one line


def empty_file(d: Path) -> str:
    (d / "pool.jsonl").write_bytes(b"")
    return str(d / "pool.jsonl")


def only_bad_rows(d: Path) -> str:
    (d / "pool.jsonl").write_bytes(b"{\n[]\n" + jline({"instruction": "a"}) + b"\n")
    return str(d / "pool.jsonl")


def truncated_parquet(d: Path) -> str:
    pq.write_table(pa.Table.from_pylist([good(i) for i in range(50)]), d / "pool.parquet")
    data = (d / "pool.parquet").read_bytes()
    (d / "pool.parquet").write_bytes(data[: len(data) // 2])
    return str(d / "pool.parquet")


def json_named_parquet(d: Path) -> str:
    write_pool(d / "pool.parquet", [good(1)])
    return str(d / "pool.parquet")


def clashing_schemas(d: Path) -> str:
    pq.write_table(pa.Table.from_pylist([good(1)]), d / "a.parquet")
    pq.write_table(pa.table({"instruction": [1], "output": [2]}), d / "b.parquet")
    return str(d)


def mixed_kinds(d: Path) -> str:
    write_pool(d / "a.jsonl", [good(1)])
    pq.write_table(pa.Table.from_pylist([good(2)]), d / "b.parquet")
    return str(d)


FILE_CASES = [
    (empty_file, "data: the pool has no usable rows"),
    (only_bad_rows, "data: the pool has no usable rows"),
    (truncated_parquet, "data: cannot read Parquet file"),
    (json_named_parquet, "data: cannot read Parquet file"),
    (clashing_schemas, "have incompatible schemas: Unable to merge: Field instruction"),
    (mixed_kinds, "mixes JSONL and Parquet files"),
]


@pytest.mark.parametrize(("build", "message"), FILE_CASES, ids=[b.__name__ for b, _ in FILE_CASES])
def test_unusable_files_are_one_line(
    tmp_path: Path, build: Callable[[Path], str], message: str
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    proc = select(f"data.path={build(data)}", "method=random", f"output_dir={tmp_path / 'out'}")
    assert message in error_line(proc, 1)


# ---------------------------------------------------------------------------------------------
# configs: unknown keys and impossible values stop the run before any work

BOMB = "seed:\n  - &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"  - &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi")
)  # 9 ** 9 strings if expanded


@pytest.mark.parametrize(
    ("config", "overrides", "message"),
    [
        ("colour: red\n", [], "config: unknown key colour (known keys: "),
        (None, ["scoring.turbo=true"], "config: unknown key scoring.turbo"),
        (None, ["budget=1.5"], "config: budget 1.5 is a fraction > 1"),
        (None, ["budget=.nan"], "config: budget has a bad value nan"),
        (None, ["budget=most"], "config: budget has a bad value 'most'"),
        (None, ["budget=1000"], "config: budget 1000 is larger than the pool (3 usable rows)"),
        (None, ["seed=-1"], "config: seed must be >= 0, got -1"),
        (None, ["pairs.k=0"], "config: pairs.k must be >= 1, got 0"),
        (
            None,
            ["method=magic"],
            "config: method must be one of delift, delift-paper, delift-shuffled, se, random, "
            "quota, clean, full",
        ),
        ("- method\n- full\n", [], "must hold a mapping at the top level"),
        ("method: !!python/object/apply:os.system ['true']\n", [], "is not valid YAML"),
        (b"method: full\n# caf\xe9\n", [], "is not UTF-8 text (byte 18)"),
        ("seed: " + "[" * 100_000, [], "is nested too deeply"),
        ("seed: " + "9" * 5000, [], "is not valid YAML: Exceeds the limit (4300 digits)"),
        (BOMB, [], "config: seed must be an integer, got [['x', 'x', "),
        (
            None,
            ["data.path=nosuch://bucket/pool.jsonl"],
            "config: data.path 'nosuch://bucket/pool.jsonl' is not usable: Unrecognized filesystem",
        ),
    ],
    ids=[
        "unknown-key",
        "unknown-nested-key",
        "fraction-over-1",
        "nan",
        "word",
        "budget-over-pool",
        "negative-seed",
        "k-zero",
        "unknown-method",
        "not-a-mapping",
        "python-tag",
        "not-utf8",
        "too-deep",
        "huge-int",
        "alias-bomb",
        "unknown-scheme",
    ],
)
def test_bad_configs_are_one_line(
    tmp_path: Path, config: str | bytes | None, overrides: list[str], message: str
) -> None:
    path = CONFIG
    if config is not None:
        path = tmp_path / "config.yaml"
        path.write_bytes(config if isinstance(config, bytes) else config.encode())
    pool = write_pool(tmp_path / "pool.jsonl", [good(i) for i in range(3)])
    base = [f"data.path={pool}", "method=random", f"output_dir={tmp_path / 'out'}"]
    assert message in error_line(select(*base, *overrides, config=path), 2)


# ---------------------------------------------------------------------------------------------
# models: the model is the point, so method=delift with the tiny model


def delift(tmp_path: Path, model: Path | str, *overrides: str) -> subprocess.CompletedProcess[str]:
    pool = write_pool(tmp_path / "pool.jsonl", [good(i) for i in range(4)])
    return select(
        f"data.path={pool}",
        "method=delift",
        f"model.path={model}",
        "scoring.executor=local",
        "budget=2",
        f"output_dir={tmp_path / 'out'}",
        *overrides,
    )


def test_missing_model_path_is_one_line(tmp_path: Path) -> None:
    message = error_line(delift(tmp_path, tmp_path / "no-model"), 1)
    assert message == f"model: model.path does not exist: {tmp_path / 'no-model'}"


class _TouchOnLoad:
    """A pickle that creates a file when unpickled: proof the weights were never loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.marker,))


def test_pickle_only_model_is_refused_unread(tiny_model_dir: str, tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    for f in model.glob("*.safetensors"):
        f.unlink()
    marker = tmp_path / "unpickled"
    (model / "pytorch_model.bin").write_bytes(pickle.dumps(_TouchOnLoad(marker)))
    message = error_line(delift(tmp_path, model), 1)
    assert message.startswith(f"model: {model} has only pickle weights (unsafe to load)")
    assert not marker.exists()


def test_knn_k_larger_than_pool_is_one_line(tiny_model_dir: str, tmp_path: Path) -> None:
    proc = delift(tmp_path, tiny_model_dir, "pairs.mode=knn", "pairs.k=50", "pairs.embedder=self")
    assert error_line(proc, 2).startswith("config: pairs.k=50 needs more than the 4 candidates")


def test_truncated_safetensors_is_one_line(tiny_model_dir: str, tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    for f in model.glob("*.safetensors"):
        f.write_bytes(f.read_bytes()[:100])
    assert error_line(delift(tmp_path, model), 1).startswith("model: cannot load")


def test_unwritable_store_is_one_line_before_scoring(tiny_model_dir: str, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("a file where the store's directory should be")
    proc = delift(tmp_path, tiny_model_dir, f"store.uri={tmp_path / 'file' / 'store'}")
    assert error_line(proc, 1).startswith(f"store: cannot write to {tmp_path / 'file' / 'store'}/")
    assert "scoring pairs" not in proc.stderr  # stopped before any scoring started


@pytest.mark.parametrize("command", ["select", "train", "eval", "compare", "refresh"])
def test_an_output_path_under_a_file_is_one_line(tmp_path: Path, command: str) -> None:
    (tmp_path / "file").write_text("a file where a directory should be")
    pool = write_pool(tmp_path / "pool.jsonl", [good(i) for i in range(3)])
    test = write_pool(tmp_path / "test.jsonl", [good(i) for i in range(3, 5)])
    where = tmp_path / "file" / "out"
    key = "refresh.root" if command == "refresh" else "output_dir"
    data = [f"data.path={pool}", f"eval.test.path={test}", "method=random"]
    proc = select(*data, f"{key}={where}", command=command)
    what = "refresh" if command == "refresh" else "output"
    assert error_line(proc, 1) == f"{what}: cannot write to {where}: Not a directory"


# ---------------------------------------------------------------------------------------------
# resources: a request the embedded local Ray can never grant (Ray itself would wait forever)

NO_SUCH_NODE = "more than this Ray cluster has (nodes: "


REQUESTS = {  # command, the override no node can grant, the start of its one error line
    "scoring-gpu": (
        "select",
        "scoring.gpus_per_actor=1",
        "a scoring actor needs 0.5 CPUs and 1 GPUs, ",
    ),
    "scoring-cpus": (
        "select",
        "scoring.cpus_per_actor=4096",
        "a scoring actor needs 4096 CPUs and 0 GPUs",
    ),
    "eval-gpu": (
        "eval",
        "eval.gpus_per_actor=1",
        "an evaluation actor needs 0.5 CPUs and 1 GPUs, ",
    ),
    "train-workers": (
        "train",
        "train.workers=4096",
        "training on 4096 workers needs 1 CPUs and 0 GPUs each",
    ),
    "train-gpu": ("train", "train.use_gpu=true", "training on 1 workers needs 1 CPUs and 1 GPUs, "),
}

# cli.main for each argv list (JSON on stdin) in one process, each starting and closing its own
# embedded local Ray; the exit codes on stdout, each run's stderr ended by a marker line.
SEVERAL_RUNS = """
import json, sys
from delift_ray import cli
codes = []
for argv in json.load(sys.stdin):
    codes.append(cli.main(argv))
    print("--- end of run ---", file=sys.stderr, flush=True)
print(json.dumps(codes))
"""


def test_requests_no_node_can_grant_are_one_line_each(tiny_model_dir: str, tmp_path: Path) -> None:
    """One run through the real CLI; the rest through cli.main in one process (an interpreter and
    its imports per request cost more than the embedded Ray each one starts)."""
    pool = write_pool(tmp_path / "pool.jsonl", [good(i) for i in range(4)])
    test = write_pool(tmp_path / "test.jsonl", [good(i) for i in range(4, 6)])
    base = [
        f"data.path={pool}",
        f"eval.test.path={test}",
        "method=delift",
        f"model.path={tiny_model_dir}",
        f"eval.model_path={tiny_model_dir}",
        "scoring.executor=ray",
        "eval.executor=ray",
        "train.workers=1",
        "budget=2",
    ]
    command, override, message = REQUESTS["train-workers"]
    proc = select(*base, f"output_dir={tmp_path / 'cli'}", override, command=command)
    line = error_line(proc, 1)
    assert line.startswith(message) and NO_SUCH_NODE in line, line

    rest = {k: v for k, v in REQUESTS.items() if k != "train-workers"}
    argvs = [
        [command, "--config", str(CONFIG)]
        + [x for item in [*base, f"output_dir={tmp_path / key}", override] for x in ("--set", item)]
        for key, (command, override, _) in rest.items()
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    runs = subprocess.run(
        [sys.executable, "-c", SEVERAL_RUNS],
        input=json.dumps(argvs),
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=280,
    )
    assert runs.returncode == 0 and "Traceback" not in runs.stderr, runs.stderr
    codes = json.loads(runs.stdout.strip().splitlines()[-1])
    stderrs = runs.stderr.split("--- end of run ---\n")[: len(rest)]
    for (key, (_, _, message)), code, err in zip(rest.items(), codes, stderrs, strict=True):
        done = subprocess.CompletedProcess([key], code, "", err)
        line = error_line(done, 1)
        assert line.startswith(message) and NO_SUCH_NODE in line, (key, line)
