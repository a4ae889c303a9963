"""The testbed report's arithmetic: paired differences and subset composition, by hand."""

from __future__ import annotations

import math

import pytest

from delift_ray.testbed.report import Run, composition, mean_composition, paired_differences


def run(method, budget, draw, seed, em):
    return Run(method, budget, draw, seed, em, 0.0)


def test_paired_differences_against_random_runs_of_the_same_seed():
    runs = [
        run("random", "0.3", "0", 0, 0.2),
        run("random", "0.3", "3", 0, 0.4),  # seed 0: random mean 0.3
        run("random", "0.3", "1", 1, 0.5),
        run("random", "0.3", "2", 2, 0.1),
        run("delift", "0.3", "", 0, 0.35),  # +0.05
        run("delift", "0.3", "", 1, 0.6),  # +0.10
        run("delift", "0.3", "", 2, 0.25),  # +0.15
        run("full", "1.0", "", 1, 0.9),  # +0.40 against random 0.3, seed 1
    ]
    got = paired_differences(runs)
    mean, se, n = got[("delift", "0.3")]
    assert (mean, n) == (pytest.approx(0.10), 3)
    assert se == pytest.approx(0.05 / math.sqrt(3))
    assert got[("full", "0.3")][0] == pytest.approx(0.4) and math.isnan(got[("full", "0.3")][1])
    assert Run("random", "0.3", "3", 0, 0, 0).arm_dir == "random-b0.3-r3"
    assert Run("full", "1.0", "", 0, 0, 0).arm_dir == "full"


def test_composition_counts_planted_rows():
    rows = [
        {"id": "a", "kind": "add", "is_wrong": True, "wrong_detectable": True},
        {"id": "b", "kind": "add", "is_wrong": True, "wrong_detectable": False},
        {"id": "c", "kind": "reverse", "near_dup_of": "a"},
        {"id": "d", "kind": "reverse", "near_dup_of": "zz", "is_off_task": False},
        {"id": "e", "kind": "concat", "is_off_task": True},
    ]
    c = composition(rows, [r["id"] for r in rows])
    assert c["rows"] == 5
    assert (c["wrong"], c["wrong_detectable"], c["off_task"]) == (0.4, 0.2, 0.2)
    assert (c["near_dup"], c["dup_with_original"]) == (0.4, 0.2)
    assert c["kinds"] == {"add": 2, "reverse": 2, "concat": 1}
    m = mean_composition([c, composition(rows[:2], ["a", "b"])])
    assert (
        m["wrong"] == pytest.approx(0.7) and m["kinds"]["add"] == 2 and m["kinds"]["concat"] == 0.5
    )
