"""The two maps every stage runs on Ray with: an actor pool (a worker built once per actor, fed
batches of rows) and Ray tasks (a function applied to each item).

Both start Ray through the run's session (`using_ray`), put large shared objects in the object
store once and hand back results in input order, like `map`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np

from delift_ray.distributed.resources import check_fits
from delift_ray.distributed.session import using_ray
from delift_ray.errors import DeliftError, first_line
from delift_ray.logs import third_party_level

R = TypeVar("R")
Batch = dict[str, np.ndarray]
INDEX = "_delift_index"  # each row's position in the input, carried through the worker
ERROR = "_delift_error"  # a DeliftError's first line, "" where the worker succeeded


class ActorSettings(Protocol):
    """How many actors, and what each one reserves (a config section such as scoring or eval)."""

    @property
    def actors(self) -> int:
        """Actors in the pool (at most one per row)."""
        ...

    @property
    def cpus_per_actor(self) -> float:
        """CPUs each actor reserves (fractional: see ray_session's logical CPUs)."""
        ...

    @property
    def gpus_per_actor(self) -> float:
        """GPUs each actor reserves."""
        ...


class _PoolActor:
    """One actor of an actor_map: builds the worker once, from its arguments in the object
    store, and feeds it batches. A DeliftError (a model this node cannot load, a store it cannot
    write) comes back as the batch's one-line ERROR instead of a remote traceback."""

    def __init__(self, worker: Callable[..., Callable[[Batch], Batch]], kwargs: dict) -> None:
        import ray

        self.worker: Callable[[Batch], Batch] | None = None
        self.error = ""
        try:
            self.worker = worker(**dict(zip(kwargs, ray.get(list(kwargs.values())))))
        except DeliftError as e:
            self.error = first_line(e)

    def __call__(self, batch: Batch) -> Batch:
        """The worker's output columns for the batch, plus INDEX and ERROR."""
        index = batch.pop(INDEX)
        error = self.error
        if self.worker is not None:
            try:
                return {**self.worker(batch), INDEX: index, ERROR: np.full(len(index), "")}
            except DeliftError as e:
                error = first_line(e)
        return {INDEX: index, ERROR: np.full(len(index), error)}


def actor_map(
    worker: Callable[..., Callable[[Batch], Batch]],
    kwargs: dict[str, Any],
    rows: Sequence[dict[str, Any]],
    settings: ActorSettings,
    what: str,
    section: str,
    batch_size: int = 1,
) -> Iterator[dict[str, Any]]:
    """Output rows of `worker(**kwargs)` (a callable class, one per actor) over numpy batches of
    `rows`, in input order; a DeliftError in an actor stops the map as "<line> (in <what>)"."""
    if not rows:
        return
    with using_ray():
        import ray

        hint = f"lower {section}.cpus_per_actor / {section}.gpus_per_actor"
        check_fits(what, settings.cpus_per_actor, settings.gpus_per_actor, 1, hint)
        _quiet_ray_data()
        refs = {name: ray.put(value) for name, value in kwargs.items()}
        # Named after the worker: Ray Data names the operator, its logs and the actors' process
        # titles after the class it is given.
        actor = type(getattr(worker, "__name__", "Worker"), (_PoolActor,), {})
        blocks = min(len(rows), max(settings.actors, -(-len(rows) // batch_size)))
        items = [{**row, INDEX: n} for n, row in enumerate(rows)]
        ds = ray.data.from_items(items, override_num_blocks=blocks).map_batches(
            actor,
            fn_constructor_kwargs={"worker": worker, "kwargs": refs},
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=min(settings.actors, len(rows))),
            num_cpus=settings.cpus_per_actor,
            num_gpus=settings.gpus_per_actor or None,
        )
        batches = ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0)
        yield from _in_order(batches, what)


def _in_order(batches: Iterable[Batch], what: str) -> Iterator[dict[str, Any]]:
    """Rows of the actors' output batches, by INDEX, as soon as every earlier row is there."""
    waiting: dict[int, dict[str, Any]] = {}
    done = 0
    for batch in batches:
        index, errors = batch.pop(INDEX).tolist(), batch.pop(ERROR)
        for n, position in enumerate(index):
            if errors[n]:
                raise DeliftError(f"{errors[n]} (in {what})")
            waiting[position] = {k: _python(v[n]) for k, v in batch.items()}
        while done in waiting:
            yield waiting.pop(done)
            done += 1


def _python(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def task_map(
    fn: Callable[..., R],
    items: Sequence[Any],
    shared: Mapping[str, Any] | None = None,
    *,
    cpus: float = 1.0,
) -> list[R]:
    """[fn(item, **shared) for item in items] as Ray tasks of `cpus` CPUs each; every shared
    value is put in the object store once."""
    if not items:
        return []
    with using_ray():
        import ray

        refs = {name: ray.put(value) for name, value in (shared or {}).items()}
        task: Any = ray.remote(_apply).options(num_cpus=cpus)
        return ray.get([task.remote(fn, item, **refs) for item in items])


def _apply(fn: Callable[..., R], item: Any, **shared: Any) -> R:
    return fn(item, **shared)  # Ray resolved the shared object refs before the call


def _quiet_ray_data() -> None:
    """No Ray Data progress bars or per-dataset stats logs (the stages draw their own bars), and
    its console log at the level the command line set for Ray (its log file keeps everything)."""
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.verbose_stats_logs = False
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler):  # the console; files are not streams
            handler.setLevel(max(handler.level, third_party_level()))
