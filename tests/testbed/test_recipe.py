"""The testbed's recipe rule: candidates parsed in order, the best validation score per budget
(ties to the cheaper, first-listed candidate), and the compare settings it hands on."""

from __future__ import annotations

import json

import pytest

from delift_ray.errors import DeliftError
from delift_ray.testbed.recipe import choose, compare_settings, parse_candidates, run_rule
from tests.workflows.test_compare import read_csv, write_config, write_rows


def test_candidates_are_epochs_at_lr_in_order():
    assert parse_candidates("5@0.001, 20@3e-3") == [(5, 0.001), (20, 0.003)]
    for bad in ("5", "0@0.001", "5@0", "5@0.1,5@0.1"):
        with pytest.raises(ValueError):
            parse_candidates(bad)


def test_the_best_score_wins_and_ties_go_to_the_first_listed():
    order = [(5, 0.001), (20, 0.001), (5, 0.003)]
    assert choose({(5, 0.001): 0.2, (20, 0.001): 0.3, (5, 0.003): 0.25}, order) == (20, 0.001)
    assert choose({(5, 0.001): 0.3, (20, 0.001): 0.3, (5, 0.003): 0.3}, order) == (5, 0.001)
    assert choose({(20, 0.001): 0.1, (5, 0.003): 0.1}, order) == (20, 0.001)
    with pytest.raises(DeliftError, match="no candidate"):
        choose({}, order)


def test_compare_settings_name_every_budget():
    chosen = {0.1: (20, 0.003), 0.3: (5, 0.001), 1.0: (5, 0.001)}
    assert compare_settings(chosen) == ("0.1=20,0.3=5,1.0=5", "0.1=0.003,0.3=0.001,1.0=0.001")


@pytest.mark.timeout(400)
def test_rule_scores_random_subsets_on_the_validation_set(tmp_path, tiny_model_dir, ray_local):
    config = str(write_config(tmp_path, tiny_model_dir))
    validation = write_rows(tmp_path / "validation.jsonl", ["yak", "gnu", "emu"])
    out = tmp_path / "recipe"
    cands = [(1, 0.01), (2, 0.001)]
    chosen = run_rule(config, ["compare.budgets=0.3"], cands, 1, str(validation), out)
    record = json.loads((out / "recipe.json").read_text())
    for (epochs, lr), key in zip(cands, ("1@0.01", "2@0.001")):
        runs = read_csv(out / f"epochs{epochs}-lr{lr:g}" / "runs.csv")
        # random at the budget (one draw) and full (one seed), nothing else
        assert sorted((r["method"], r["budget"]) for r in runs) == [
            ("full", "1.0"),
            ("random", "0.3"),
        ]
        for r in runs:
            assert record["scores"][r["budget"]][key] == pytest.approx(float(r["exact_match"]))
        for manifest in (out / f"epochs{epochs}-lr{lr:g}").glob("*/seed*/train_manifest.json"):
            assert json.loads(manifest.read_text())["epochs"] == epochs  # the config says 1
        for ev in (out / f"epochs{epochs}-lr{lr:g}").glob("*/seed*/eval/eval.json"):
            assert json.loads(ev.read_text())["test"] == str(validation)  # never the test set
    for budget, cand in chosen.items():
        scores = {c: record["scores"][str(budget)][f"{c[0]}@{c[1]:g}"] for c in cands}
        assert cand == choose(scores, cands)
        assert record["chosen"][str(budget)] == {"epochs": cand[0], "lr": cand[1]}
    assert set(chosen) == {0.3, 1.0}
