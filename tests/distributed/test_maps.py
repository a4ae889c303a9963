"""The two maps on a real local Ray: the actor pool keeps input order, builds each worker once
from the object store and turns a DeliftError in an actor into one line; the task map."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial

import numpy as np
import pytest

from delift_ray.distributed.maps import Batch, actor_map, task_map
from delift_ray.errors import DeliftError

pytestmark = pytest.mark.timeout(240)


class Lookup:
    """A test worker: y = table[x] + offset, and the pid of the actor that built it."""

    def __init__(self, table: np.ndarray, offset: int) -> None:
        if offset < 0:
            raise DeliftError("model: cannot load it here\nsecond line the driver never shows")
        self.table, self.offset = table, offset

    def __call__(self, batch: Batch) -> Batch:
        if (batch["x"] == 99).any():
            raise DeliftError("store: cannot write block 99")
        n = len(batch["x"])
        return {"y": self.table[batch["x"]] + self.offset, "pid": np.full(n, os.getpid())}


@dataclass
class Pool:
    """ActorSettings, as a config section (scoring, eval) gives them."""

    actors: int = 2
    cpus_per_actor: float = 0.5
    gpus_per_actor: float = 0.0


def run(rows: list[dict], offset: int = 0, batch_size: int = 3) -> list[dict]:
    kwargs = {"table": np.arange(100) * 10, "offset": offset}
    return list(actor_map(Lookup, kwargs, rows, Pool(), "a test actor", "test", batch_size))


def test_actor_map_returns_every_row_in_input_order(ray_local) -> None:
    xs = [int(x) for x in np.random.default_rng(0).permutation(40)]
    out = run([{"x": x, "name": f"row{x}"} for x in xs], offset=1)
    assert [r["y"] for r in out] == [x * 10 + 1 for x in xs]
    assert all(isinstance(r["y"], int) for r in out)  # numpy scalars come back as Python ones
    assert 1 <= len({r["pid"] for r in out}) <= 2  # at most one worker per actor


@pytest.mark.parametrize(
    ("offset", "line"),
    [(-1, "model: cannot load it here"), (0, "store: cannot write block 99")],
    ids=["in-the-constructor", "in-a-batch"],
)
def test_a_delift_error_in_an_actor_is_one_line_on_the_driver(ray_local, offset, line) -> None:
    with pytest.raises(DeliftError) as caught:
        run([{"x": x} for x in range(80, 100)], offset=offset)
    assert str(caught.value) == f"{line} (in a test actor)"


def test_actor_map_of_no_rows_asks_ray_for_nothing() -> None:
    assert run([]) == []


def scaled(item: int, weights: np.ndarray, scale: int) -> int:
    return int(weights[item]) * scale


def test_task_map_applies_the_function_to_each_item_in_order(ray_local) -> None:
    items = [5, 0, 3, 3, 9]
    shared = {"weights": np.arange(10) ** 2}
    assert task_map(partial(scaled, scale=2), items, shared, cpus=0.5) == [50, 0, 18, 18, 162]
    assert task_map(scaled, [], shared) == []
