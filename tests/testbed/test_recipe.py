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
    chosen = recipe.run_rule(config, [], [1, 2], threshold=2.0, out=out)  # 2.0: unreachable
    record = json.loads((out / "recipe.json").read_text())
    measured = {}
    for epochs in (1, 2):
        with (out / f"epochs-{epochs}" / "comparison.csv").open(newline="") as f:
            (row,) = list(csv.DictReader(f))
        assert row["method"] == "full" and row["runs"] == "1"
        measured[epochs] = float(row["exact_match"])
    assert record["tried"] == [[1, measured[1]], [2, measured[2]]]
    assert chosen == record["epochs"] == recipe.choose(list(measured.items()), 2.0)
    # A reachable threshold: the first candidate passes (its finished sub-runs are reused), and
    # the rule stops there.
    assert recipe.run_rule(config, [], [2, 1], threshold=0.0, out=out) == 2
    assert json.loads((out / "recipe.json").read_text())["tried"] == [[2, measured[2]]]
