"""The selection stages, one entry each in STAGES: the set a stage conditions on and its objective.

- instruction: facility location (FL) over the pool kernel K; no cross set.
- task: FL mutual information (FLMI) with the target set D_T (cross kernel Q, weight eta).
- continual: FL conditional gain (FLCG) given the data already learned (cross kernel P, nu).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeVar

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
    kernel or None, the selection section), and that objective's display name."""

    cross: Literal["target", "existing"] | None
    cross_role: str  # what the cross set is, for the config error naming it
    objective_name: str
    objective: Callable[[Kernel, Kernel | None, SelectionConfig], Objective]

    def cross_set(self, sets: Mapping[str, T]) -> T | None:
        """The set the stage conditions on, from a run's sets by name (None if it has none)."""
        return None if self.cross is None else sets.get(self.cross)


def _fl(pool: Kernel, cross: Kernel | None, sel: SelectionConfig) -> Objective:
    return facility_location(pool)


def _flmi(pool: Kernel, cross: Kernel | None, sel: SelectionConfig) -> Objective:
    assert cross is not None
    return fl_mutual_information(pool, cross, eta=sel.eta)


def _flcg(pool: Kernel, cross: Kernel | None, sel: SelectionConfig) -> Objective:
    assert cross is not None
    return fl_conditional_gain(pool, cross, nu=sel.nu)


STAGES: dict[str, Stage] = {
    "instruction": Stage(None, "", "FL", _fl),
    "task": Stage("target", "the target set D_T", "FLMI", _flmi),
    "continual": Stage("existing", "data already learned", "FLCG", _flcg),
}
