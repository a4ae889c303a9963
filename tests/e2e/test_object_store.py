"""Every path on a real S3-compatible server (moto_server on 127.0.0.1): select, refresh and
compare (select, train, eval) read their inputs from it and commit their outputs to it all or
nothing."""

from __future__ import annotations

import json

import pytest

from delift_ray import storage
from delift_ray.cli import main
from delift_ray.commit import POINTER, committed_dir
from delift_ray.config import DataConfig, TrainConfig, load_config
from delift_ray.errors import DeliftError
from delift_ray.finetune.driver import subset_path
from delift_ray.workflows import outputs
from delift_ray.workflows.compare import run_compare
from delift_ray.workflows.refresh import run_refresh
from delift_ray.workflows.select import run_select
from tests.conftest import WORD_TASKS, WORDS


def put_pool(s3, words):
    """A JSONL pool of two word tasks x `words` on the server; returns its URI."""
    rows = [{"instruction": t, "input": w, "output": f(w)} for t, f in WORD_TASKS for w in words]
    uri = s3.fresh_uri("pool").replace("?", ".jsonl?", 1)
    storage.write_bytes(uri, "".join(json.dumps(r) + "\n" for r in rows).encode())
    return uri


def picks(directory):
    return storage.read_table(storage.join(directory, "selection.parquet"))["id"].to_pylist()


def test_select_on_s3_commits_all_or_nothing_and_reruns_from_the_store(
    s3_server, tiny_model_dir, monkeypatch
):
    s3 = s3_server
    pool, target, out = put_pool(s3, WORDS[:5]), put_pool(s3, WORDS[8:9]), s3.fresh_uri()
    settings = [
        f"data.path={pool}",
        f"target.path={target}",
        "stage=task",
        f"model.path={tiny_model_dir}",
        f"output_dir={out}",
        "budget=3",
        "scoring.executor=local",
    ]
    first = run_select(load_config(None, settings))
    committed = committed_dir(out)
    assert first.directory == committed and committed.startswith(out.split("?")[0] + "/runs/")
    assert first.manifest["kernel"]["pairs_scored"] == 10 * 10 + 2 * 10  # pool x pool, target
    files = s3.keys(out)
    assert POINTER in files and any(k.startswith("store/") for k in files)  # the store is on S3
    attempt = storage.name(committed)
    assert {f"runs/{attempt}/{n}" for n in first.manifest["files"].values()} <= set(files)
    assert len(picks(committed)) == 3

    second = run_select(load_config(None, settings))  # a re-run: every pair from the store
    assert second.manifest["kernel"]["pairs_scored"] == 0
    assert picks(committed_dir(out)) == picks(committed)
    pointer = s3.get(storage.join(out, POINTER))

    # A run killed while writing its outputs (here: the subset write dies and, as after a kill,
    # nothing cleans up): its files stay where no reader looks; latest still names the last.
    def dies(pool_set, ids, path):
        storage.write_bytes(path, b'{"partial": ')
        raise OSError("connection reset")

    monkeypatch.setattr(outputs, "write_subset", dies)
    monkeypatch.setattr("delift_ray.commit.Staging.abandon", lambda self: None)
    with pytest.raises(DeliftError, match=r"^output: cannot write to s3://\S+: connection reset"):
        run_select(load_config(None, [*settings, "seed=1"]))
    assert s3.get(storage.join(out, POINTER)) == pointer
    attempts = {k.split("/")[1] for k in s3.keys(out) if k.startswith("runs/")} - {""}
    assert len(attempts) == 3  # the killed attempt's prefix is there, uncommitted
    subset = subset_path(TrainConfig(subset=out), DataConfig(path=pool))
    assert subset == storage.join(committed_dir(out), "subset.jsonl")
    assert storage.read_text(subset).count("\n") == 3
    # Killed before its first commit: nothing there to train on, and that is what train says.
    never = s3.fresh_uri()
    store = f"store.uri={storage.join(out, 'store')}"  # every pair is in it: nothing scored
    with pytest.raises(DeliftError, match="connection reset"):
        run_select(load_config(None, [*settings, f"output_dir={never}", store]))
    assert any(k.startswith("runs/") for k in s3.keys(never)) and POINTER not in s3.keys(never)
    with pytest.raises(DeliftError, match=r"^train: s3://\S+ holds no committed run \(no latest"):
        subset_path(TrainConfig(subset=never), DataConfig(path=pool))

    monkeypatch.undo()  # the next commit removes the killed attempt and all but the last two
    third = run_select(load_config(None, [*settings, "seed=1"]))
    kept = {k.split("/")[1] for k in s3.keys(out) if k.startswith("runs/")} - {""}
    assert kept == {storage.name(committed_dir(out)), attempt_of(pointer)}
    assert third.directory == committed_dir(out)


def attempt_of(pointer):
    return json.loads(pointer)["run"].split("/")[1]


def test_object_store_errors_are_one_line(s3_server, tiny_model_dir, capsys):
    s3 = s3_server
    pool = put_pool(s3, WORDS[:2])
    base = ["--config", "pipelines/configs/instruction.yaml", "--set", "method=random"]

    def run(*sets):
        code = main(["select", *base, *(a for s in sets for a in ("--set", s))])
        return code, capsys.readouterr().err.strip().splitlines()[-1]

    missing = s3.uri("run", bucket="no-such-bucket")
    code, line = run(f"data.path={pool}", f"output_dir={missing}")
    assert code == 1
    assert line.startswith("delift-ray: error: output: cannot write to s3://no-such-bucket/run: ")
    assert "Bucket 'no-such-bucket' not found" in line
    code, line = run(f"data.path={s3.uri('pool.jsonl', bucket='no-such-bucket')}")
    assert (code, line) == (
        1,
        "delift-ray: error: data: path not found: s3://no-such-bucket/pool.jsonl",
    )
    code, line = run(f"data.path={pool}", f"store.uri=s3:///store{s3.query}")
    assert code == 2
    assert line == (
        "delift-ray: error: config: store.uri 's3:///store' is not usable: "
        "Missing bucket name in S3 URI"
    )


def write_pool(uri, words):
    rows = [{"instruction": t, "input": w, "output": f(w)} for t, f in WORD_TASKS for w in words]
    storage.write_bytes(uri, "".join(json.dumps(r) + "\n" for r in rows).encode())


def test_refresh_and_compare_with_every_path_on_s3(
    s3_server, tiny_model_dir, ray_local, tmp_path, monkeypatch
):
    s3 = s3_server
    pool = s3.fresh_uri("pool").replace("?", ".jsonl?", 1)
    root = s3.fresh_uri("refresh")
    refresh = [f"data.path={pool}", f"model.path={tiny_model_dir}", f"refresh.root={root}"]
    refresh += ["budget=0.5", "scoring.executor=local"]
    write_pool(pool, WORDS[:4])  # 8 rows
    first = run_refresh(load_config(None, refresh))
    assert first.manifest["kernel"]["pairs_scored"] == 8 * 8
    write_pool(pool, WORDS[:5])  # +2 rows
    second = run_refresh(load_config(None, refresh))
    assert second.manifest["kernel"]["pairs_scored"] == 10 * 10 - 8 * 8  # only the new pairs
    assert second.manifest["refresh"]["previous_run"] == storage.display(root) + "/run-0001"
    assert json.loads(s3.get(storage.join(root, POINTER)))["run"] == "run-0002"
    assert any(k.startswith("store/") for k in s3.keys(root))  # the shared store, on S3

    # Compare on S3: select, fine-tune (Ray Train's workers write the checkpoints to S3 with the
    # credentials they inherited; the driver exports the model there), evaluate the model fetched
    # back from S3 on a test set on S3; tables and plots written to S3.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    test = s3.fresh_uri("test").replace("?", ".jsonl?", 1)
    write_pool(test, WORDS[9:10])  # 2 rows, held out from the pool
    out = s3.fresh_uri("compare")
    compare = load_config(
        None,
        [
            *refresh[:2],  # budget 0.3 of the 10 rows: 3
            f"output_dir={out}",
            "compare.methods=random",
            "train.batch_size=4",
            "train.max_length=64",
            f"eval.test.path={test}",
            "eval.executor=local",
            "eval.max_new_tokens=4",
        ],
    )
    result = run_compare(compare)
    assert dict(result.ran) == {"select": 1, "train": 1, "eval": 1}
    keys = s3.keys(out)
    trained = next(k for k in keys if k.endswith("/train_manifest.json"))
    seed = trained.rsplit("/", 1)[0]
    m = json.loads(s3.get(storage.join(out, trained)))
    assert m["rows"] == 3 and m["subset"].startswith(storage.display(out))
    assert f"{seed}/model/{POINTER}" in keys
    assert any(k.startswith(f"{seed}/train/{m['run_name']}/checkpoint_") for k in keys)
    evaluated = json.loads(s3.get(storage.join(out, f"{seed}/eval/eval.json")))
    assert evaluated["rows"] == 2
    assert evaluated["model_fingerprint"] == m["model_fingerprint"]  # the same weights, fetched
    assert s3.get(storage.join(out, "metrics.png")).startswith(b"\x89PNG")
    assert b"random" in s3.get(storage.join(out, "comparison.csv"))
    assert dict(run_compare(compare).ran) == {}  # every sub-run reused from its record on S3
