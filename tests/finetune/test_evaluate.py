"""Evaluation: metrics on hand-made predictions, the held-out check, left-padded greedy generation
on the tiny model, and the pipeline's files (in-process and on a Ray Data actor pool)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from delift_ray.config import EmbedderConfig, ModelConfig, load_config
from delift_ray.errors import DeliftError
from delift_ray.finetune.evaluate import (
    Generator,
    embedding_cosine,
    exact_match,
    normalize_answer,
    rouge_f,
    run_eval,
)

WORDS = ["cat", "dog", "sun", "tree", "milk", "rain", "fog", "sky", "sea", "owl"]


def write_rows(path, words):
    rows = [{"instruction": "Reverse the word.", "input": w, "output": w[::-1]} for w in words]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def eval_cfg(tmp_path, model, pool, test, *extra):
    return load_config(
        None,
        [
            f"data.path={pool}",
            "method=random",
            f"eval.test.path={test}",
            f"eval.model_path={model}",
            f"output_dir={tmp_path / 'run'}",
            "eval.max_new_tokens=6",
            "eval.batch_size=3",
            *extra,
        ],
    )


@pytest.mark.parametrize(
    ("prediction", "reference", "same"),
    [
        ("  Paris. ", "paris", True),
        ("PARIS!", " Paris", True),
        ('"hello   world"', "Hello world", True),
        ("hello\n\tworld", "hello world", True),
        ("Par is", "Paris", False),
        ("3.5", "3.50", False),
        ("it's", "its", False),
        ("", "", True),
    ],
)
def test_exact_match_normalises_case_spaces_and_edge_punctuation(prediction, reference, same):
    assert exact_match(prediction, reference) is same


def test_normalize_keeps_inner_punctuation():
    assert normalize_answer(" ...Dr.  Who?! ") == "dr. who"


def test_rouge_on_hand_computed_examples():
    # same 6 unigrams -> ROUGE-1 = 1; LCS "the sat on the" = 4 of 6 -> P = R = F = 2/3
    # 5 of 6 reference unigrams, all 5 predicted ones match -> P = 1, R = 5/6, F = 10/11
    scores = rouge_f(
        ["the mat sat on the cat", "the cat on the mat", "dog"],
        ["the cat sat on the mat", "the cat sat on the mat", "cat"],
    )
    assert scores["rouge1"] == pytest.approx([1.0, 10 / 11, 0.0])
    assert scores["rougeL"] == pytest.approx([2 / 3, 10 / 11, 0.0])


def test_cosine_of_identical_strings_is_one_and_of_unrelated_ones_is_lower():
    cos = embedding_cosine(
        [" The cat sat.", "quarterly revenue grew"], ["The cat sat.", "a kitten"], EmbedderConfig()
    )
    assert cos[0] == pytest.approx(1.0, abs=1e-5)
    assert cos[1] < 0.5


def test_an_overlapping_test_set_is_rejected_before_any_model_work(tmp_path):
    pool = write_rows(tmp_path / "pool.jsonl", WORDS)
    test = write_rows(tmp_path / "test.jsonl", ["ant", "cat", "bee", "dog"])
    cfg = eval_cfg(tmp_path, "/no/such/model", pool, test)
    with pytest.raises(DeliftError, match=r"eval: 2 test rows also appear in the pool set \(e\.g"):
        run_eval(cfg)
    existing = write_rows(tmp_path / "existing.jsonl", ["bee"])
    held_out = write_rows(tmp_path / "held_out.jsonl", ["ant", "bee"])
    cfg = eval_cfg(tmp_path, "/no/such/model", pool, held_out, f"existing.path={existing}")
    with pytest.raises(DeliftError, match="1 test rows also appear in the existing set"):
        run_eval(cfg)


def test_left_padded_batch_generation_matches_one_row_at_a_time(tiny_model_dir):
    gen = Generator(ModelConfig(path=tiny_model_dir), "auto", max_new_tokens=5)
    xs = ["Instruction: Reverse the word.\nInput: cat\n", "Hi\n", "Instruction: Add\n"]
    batched = gen.generate(xs)
    assert all(isinstance(p, str) for p in batched)
    assert batched == [gen.generate([x])[0] for x in xs]
    loss, tokens = gen.losses(xs, [" tac", " hello", " 5"])
    single, _ = gen.losses(xs[1:2], [" hello"])
    assert np.isfinite(loss).all() and (tokens > 1).all()
    assert loss[1] == pytest.approx(single[0], rel=1e-5)


@pytest.mark.timeout(280)
@pytest.mark.parametrize("executor", ["local", "ray"])
def test_eval_writes_rows_and_summary(tmp_path, tiny_model_dir, executor, request):
    if executor == "ray":
        request.getfixturevalue("ray_local")
    pool = write_rows(tmp_path / "pool.jsonl", WORDS)
    test = write_rows(tmp_path / "test.jsonl", ["ant", "bee", "elk", "gnu", "yak"])
    extra = [f"eval.executor={executor}", "eval.actors=2"]
    result = run_eval(eval_cfg(tmp_path, tiny_model_dir, pool, test, *extra))
    rows = pq.read_table(result.rows_path).to_pylist()
    assert [r["reference"] for r in rows] == [" tna", " eeb", " kle", " ung", " kay"]
    assert all(isinstance(r["prediction"], str) for r in rows)
    assert all(0 <= r["rouge1"] <= 1 and -1 <= r["cosine"] <= 1.0001 for r in rows)
    assert all(math.isfinite(r["loss"]) and r["response_tokens"] >= 2 for r in rows)
    summary = json.loads(Path(result.summary_path).read_text())
    assert summary["rows"] == 5 and summary["held_out_from"] == ["pool"]
    metrics = summary["metrics"]
    assert set(metrics) == {
        "exact_match",
        "rouge1",
        "rougeL",
        "cosine",
        "response_loss",
        "perplexity",
        "loss_rows",
    }
    assert metrics["response_loss"] == pytest.approx(np.mean([r["loss"] for r in rows]))
    assert metrics["loss_rows"] == 5 and metrics["perplexity"] > 1


def test_eval_command_prints_the_metrics(tmp_path, tiny_model_dir, capsys):
    from delift_ray.cli import main

    pool = write_rows(tmp_path / "pool.jsonl", WORDS)
    test = write_rows(tmp_path / "test.jsonl", ["ant", "bee"])
    config = tmp_path / "eval.yaml"
    config.write_text(f"data:\n  path: {pool}\nmethod: random\neval:\n  test:\n    path: {test}\n")
    sets = [f"eval.model_path={tiny_model_dir}", "eval.executor=local", f"output_dir={tmp_path}"]
    assert main(["eval", "--config", str(config), *(a for s in sets for a in ("--set", s))]) == 0
    out = capsys.readouterr().out
    assert f"evaluated {tiny_model_dir} on 2 rows: exact_match 0.0000, rouge1 " in out
    assert f"summary {tmp_path}/eval.json" in out
