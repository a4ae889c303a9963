"""The testbed's recipe rule: the first candidate reaching the threshold on the full pool, else
the best one."""

from __future__ import annotations

import csv
import json

import pytest

from delift_ray.errors import DeliftError
from delift_ray.testbed import recipe
from tests.workflows.test_compare import write_config


@pytest.mark.parametrize(
    ("tried", "chosen"),
    [
        ([(3, 0.10), (10, 0.35), (20, 0.50)], 10),  # the first to reach it, not the best
        ([(3, 0.30)], 3),  # reaching means >=
        ([(3, 0.10), (10, 0.20), (20, 0.15)], 10),  # none reaches it: the best
        ([(3, 0.20), (10, 0.20)], 3),  # a tie: the first
    ],
)
def test_choose_follows_the_rule(tried, chosen):
    assert recipe.choose(tried, 0.3) == chosen


def test_choose_needs_a_candidate():
    with pytest.raises(DeliftError, match="no candidate"):
        recipe.choose([], 0.3)


@pytest.mark.timeout(400)
def test_rule_trains_on_the_full_pool_until_a_candidate_passes(tmp_path, tiny_model_dir, ray_local):
    config = str(write_config(tmp_path, tiny_model_dir))
    out = tmp_path / "recipe"
    # A reachable threshold: the first candidate passes and the rule stops there (one training,
    # on the whole pool for that many epochs; the second candidate never runs).
    assert recipe.run_rule(config, [], [2, 1], threshold=0.0, out=out) == 2
    with (out / "epochs-2" / "comparison.csv").open(newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["method"] == "full" and row["runs"] == "1"
    measured = float(row["exact_match"])
    assert json.loads((out / "recipe.json").read_text())["tried"] == [[2, measured]]
    assert not (out / "epochs-1").exists()
    (manifest,) = (out / "epochs-2").glob("*/seed*/train_manifest.json")
    trained = json.loads(manifest.read_text())
    assert (trained["epochs"], trained["rows"]) == (2, 20)  # the config says 1
    # An unreachable one: every candidate is tried in order (a finished candidate's sub-runs are
    # reused, not trained again) and the rule's pick is recorded.
    before = manifest.stat().st_mtime_ns
    chosen = recipe.run_rule(config, [], [2, 2], threshold=2.0, out=out)
    record = json.loads((out / "recipe.json").read_text())
    assert record["tried"] == [[2, measured], [2, measured]]
    assert chosen == record["epochs"] == recipe.choose([(2, measured)] * 2, 2.0) == 2
    assert manifest.stat().st_mtime_ns == before
