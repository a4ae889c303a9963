"""Ray Train lives here: a gang of training workers, what each sees of Ray Train, and the fit.

The training loop itself (delift_ray.finetune.worker) is plain PyTorch: it gets a context for
its rank, device, checkpoints and reports, and its inputs from the object store.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

from delift_ray.distributed.resources import check_fits
from delift_ray.distributed.session import using_ray


class Checkpoint(Protocol):
    """The last checkpoint of a fit (a Ray Train Checkpoint)."""

    @property
    def path(self) -> str:
        """Where it is stored (a directory under the storage path)."""
        ...

    def as_directory(self) -> AbstractContextManager[str]:
        """A local directory holding its files, while in use."""
        ...


class RayTrainContext:
    """A WorkerContext (delift_ray.finetune.worker) on Ray Train, inside a training function."""

    def __init__(self) -> None:
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        self.rank: int = ctx.get_world_rank()
        self.world: int = ctx.get_world_size()
        self.device: Any = ray.train.torch.get_device()

    def prepare_model(self, model: Any) -> Any:
        """The model on this worker's device, in DistributedDataParallel when world > 1."""
        import ray.train.torch

        return ray.train.torch.prepare_model(model)

    @contextmanager
    def last_checkpoint(self) -> Iterator[Path | None]:
        """The directory of the run's last checkpoint while in use, or None on a first start."""
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            yield None
            return
        with checkpoint.as_directory() as d:
            yield Path(d)

    def report(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        """ray.train.report, with the directory as the checkpoint if there is one."""
        import ray.train

        attached = ray.train.Checkpoint.from_directory(str(checkpoint)) if checkpoint else None
        ray.train.report(metrics, checkpoint=attached)


def fit_gang(
    loop: Callable[..., None],
    inputs: dict[str, Any],
    workers: int,
    use_gpu: bool,
    max_failures: int,
    name: str,
    storage: str,
    hint: str,
) -> Checkpoint:
    """Run loop(context, **inputs) on `workers` Ray Train workers (each input put in the object
    store once), restarting the gang from its last checkpoint up to `max_failures` times; the
    last checkpoint. `hint` says how to ask for less when the cluster cannot host the gang."""
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")  # else ~2 s per report
    with using_ray():
        import ray
        from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        check_fits(f"training on {workers} workers", 1, float(use_gpu), workers, hint)
        trainer = TorchTrainer(
            _train_function,
            train_loop_config={
                "loop": loop,
                "inputs": {key: ray.put(value) for key, value in inputs.items()},
            },
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
            run_config=RunConfig(
                name=name,
                storage_path=storage,
                failure_config=FailureConfig(max_failures=max_failures),
                checkpoint_config=CheckpointConfig(num_to_keep=2),
            ),
        )
        checkpoint = trainer.fit().checkpoint
    assert checkpoint is not None  # rank 0 attaches one to every epoch's report
    return checkpoint


def _train_function(config: dict[str, Any]) -> None:
    """Ray Train's per-worker function: the loop with its inputs from the object store."""
    import ray

    refs = config["inputs"]
    inputs = dict(zip(refs, ray.get(list(refs.values()))))
    config["loop"](RayTrainContext(), **inputs)
