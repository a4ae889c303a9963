"""Ray Train lives here: a gang of training workers, the fit, and a Hugging Face Trainer's
hooks into it (the last checkpoint to resume from, a report for each checkpoint it saves).

The training itself (delift_ray.finetune.worker) is a Hugging Face Trainer; its inputs come from
the object store.
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


HF_CHECKPOINT = "checkpoint"  # RayTrainReportCallback's folder inside a Ray Train checkpoint


@contextmanager
def last_checkpoint() -> Iterator[str | None]:
    """Inside Ray Train: the run's last Trainer checkpoint directory while in use, or None."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        yield None
        return
    with checkpoint.as_directory() as d:
        yield str(Path(d, HF_CHECKPOINT))


def on_ray_train(trainer: Any) -> Any:
    """A Hugging Face Trainer prepared for Ray Train that reports each checkpoint it saves."""
    from ray.train.huggingface.transformers import RayTrainReportCallback, prepare_trainer

    trainer.add_callback(RayTrainReportCallback())
    return prepare_trainer(trainer)


def fit_gang(
    loop: Callable[..., None],
    inputs: dict[str, Any],
    workers: int,
    use_gpu: bool,
    max_failures: int,
    name: str,
    storage: str,
    hint: str,
    env: dict[str, str] | None = None,
) -> Checkpoint:
    """Run loop(**inputs) on `workers` Ray Train workers (each input put in the object store
    once, `env` set in their environment), restarting the gang from its last checkpoint up to
    `max_failures` times; the last checkpoint. `hint` says how to ask for less when the cluster
    cannot host the gang."""
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
                # Ray Train V2's field; mypy reads the V1 RunConfig that ray.train names statically.
                worker_runtime_env={"env_vars": env} if env else None,  # type: ignore[call-arg]
            ),
        )
        checkpoint = trainer.fit().checkpoint
    assert checkpoint is not None  # Trainer saves, and reports, one every epoch
    return checkpoint


def _train_function(config: dict[str, Any]) -> None:
    """Ray Train's per-worker function: the loop with its inputs from the object store."""
    import ray

    refs = config["inputs"]
    inputs = dict(zip(refs, ray.get(list(refs.values()))))
    config["loop"](**inputs)
