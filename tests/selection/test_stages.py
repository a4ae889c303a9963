"""The stage table: each stage's cross set, objective and its display name."""

from __future__ import annotations

import numpy as np
import pytest

from delift_ray.config import SelectionConfig
from delift_ray.selection.greedy import naive_greedy
from delift_ray.selection.objectives import (
    facility_location,
    fl_conditional_gain,
    fl_mutual_information,
)
from delift_ray.selection.stages import STAGES

RNG = np.random.default_rng(0)
K = RNG.random((6, 6))
CROSS = RNG.random((6, 2))
SEL = SelectionConfig(eta=0.7, nu=0.4)


@pytest.mark.parametrize(
    ("name", "cross", "objective_name", "expected"),
    [
        ("instruction", None, "FL", facility_location(K)),
        ("task", "target", "FLMI", fl_mutual_information(K, CROSS, eta=0.7)),
        ("continual", "existing", "FLCG", fl_conditional_gain(K, CROSS, nu=0.4)),
    ],
)
def test_each_stage_builds_its_objective_over_its_cross_set(name, cross, objective_name, expected):
    stage = STAGES[name]
    assert (stage.cross, stage.objective_name) == (cross, objective_name)
    got = naive_greedy(stage.objective(K, None if cross is None else CROSS, SEL), 3)
    want = naive_greedy(expected, 3)
    assert got.indices.tolist() == want.indices.tolist()
    np.testing.assert_allclose(got.gains, want.gains)
    sets = {"pool": "P", "target": "T", "existing": "E"}
    assert stage.cross_set(sets) == (None if cross is None else sets[cross])
