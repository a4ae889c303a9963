"""The map function a stage runs its independent parts with: in-process here, or one Ray task per
part with delift_ray.distributed.maps.task_map (same signature, same order of results)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

# map_fn(fn, items, shared) -> [fn(item, **shared) for item in items], in order
MapFn = Callable[[Callable[..., Any], Sequence[Any], Mapping[str, Any]], list[Any]]


def local_map(fn: Callable[..., Any], items: Sequence[Any], shared: Mapping[str, Any]) -> list[Any]:
    """The in-process map function: [fn(item, **shared) for item in items]."""
    return [fn(item, **shared) for item in items]
