"""The selection stages, one entry each in STAGES: the set a stage conditions on and its objective.

- instruction: facility location (FL) over the pool kernel K; no cross set.
- task: FL mutual information (FLMI) with the target set D_T (cross kernel Q, weight eta).
- continual: FL conditional gain (FLCG) given the data already learned (cross kernel P, nu).

Each adds selection.modular * sum_{j in A} m_j when the kernels come with demonstration means m
(kernels reduced from scored utilities) and modular > 0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeVar

import numpy as np

from delift_ray.selection.objectives import (
    Kernel,
    Objective,
    facility_location,
    fl_conditional_gain,
    fl_mutual_information,
)

if TYPE_CHECKING:
    from delift_ray.config import SelectionConfig

T = TypeVar("T")


@dataclass(frozen=True)
class Stage:
    """One stage: which set it conditions on (a config section and a key of a run's sets:
    target, existing or none), the objective it maximises, built as objective(K, the cross
    kernel or None, the selection section, the modular weights or None), and that objective's
    display name."""

    cross: Literal["target", "existing"] | None
    cross_role: str  # what the cross set is, for the config error naming it
    objective_name: str
    build: Callable[[Kernel, Kernel | None, SelectionConfig, np.ndarray | None], Objective]

    def objective(
        self,
        pool: Kernel,
        cross: Kernel | None,
        sel: SelectionConfig,
        demo_means: np.ndarray | None = None,
    ) -> Objective:
        """The stage's objective, plus sel.modular * sum m_j where demo_means m are given."""
        weights = None
        if demo_means is not None and sel.modular > 0:
            weights = sel.modular * np.asarray(demo_means, dtype=np.float64)
        return self.build(pool, cross, sel, weights)

    def cross_set(self, sets: Mapping[str, T]) -> T | None:
        """The set the stage conditions on, from a run's sets by name (None if it has none)."""
        return None if self.cross is None else sets.get(self.cross)


Weights = np.ndarray | None


def _fl(pool: Kernel, cross: Kernel | None, sel: SelectionConfig, w: Weights) -> Objective:
    return facility_location(pool, weights=w)


def _flmi(pool: Kernel, cross: Kernel | None, sel: SelectionConfig, w: Weights) -> Objective:
    assert cross is not None
    return fl_mutual_information(pool, cross, eta=sel.eta, weights=w)


def _flcg(pool: Kernel, cross: Kernel | None, sel: SelectionConfig, w: Weights) -> Objective:
    assert cross is not None
    return fl_conditional_gain(pool, cross, nu=sel.nu, weights=w)


STAGES: dict[str, Stage] = {
    "instruction": Stage(None, "", "FL", _fl),
    "task": Stage("target", "the target set D_T", "FLMI", _flmi),
    "continual": Stage("existing", "data already learned", "FLCG", _flcg),
}
