"""The fine-tuning recipe (config section `train`) as Hugging Face TrainingArguments.

Trainer logs and checkpoints once per epoch: the epoch losses in train_manifest.json are its
logged losses, and each checkpoint is what Ray Train keeps and resumes from. Trackers named in
`train.report_to` get Trainer's logs; their environment (MLFLOW_*, WANDB_*, ...) is passed from
the driver to the workers, which may run on other machines.
"""

from __future__ import annotations

import os
from typing import Any

from delift_ray.config import TrainConfig
from delift_ray.errors import ConfigError

# Environment variables each tracker reads; passed on to the training workers.
TRACKER_ENV = {
    "mlflow": ("MLFLOW_", "HF_MLFLOW_"),
    "dagshub": ("MLFLOW_", "HF_MLFLOW_", "DAGSHUB_"),
    "azure_ml": ("AZUREML_",),
    "wandb": ("WANDB_",),
    "comet_ml": ("COMET_",),
    "neptune": ("NEPTUNE_",),
    "clearml": ("CLEARML_",),
    "swanlab": ("SWANLAB_",),
    "trackio": ("TRACKIO_",),
    "dvclive": ("DVCLIVE_",),
}


def training_arguments(train: TrainConfig, output_dir: str, run_name: str) -> Any:
    """TrainingArguments for `train`: Trainer checkpoints under `output_dir` once per epoch."""
    from transformers import TrainingArguments

    fsdp = train.fsdp != "no"
    return TrainingArguments(
        output_dir=output_dir,
        run_name=run_name,
        num_train_epochs=train.epochs,
        per_device_train_batch_size=train.batch_size,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        learning_rate=train.lr,
        lr_scheduler_type=train.lr_scheduler,
        warmup_steps=train.warmup_steps,
        weight_decay=train.weight_decay,
        max_grad_norm=1.0,
        activation_checkpointing=train.gradient_checkpointing and not fsdp,
        bf16=train.mixed_precision == "bf16",
        fp16=train.mixed_precision == "fp16",
        fsdp=fsdp,  # type: ignore[arg-type]  # True is the non-deprecated form; the hint lags
        fsdp_config=fsdp_config(train) if fsdp else None,
        use_cpu=not train.use_gpu,
        dataloader_pin_memory=train.use_gpu,
        seed=train.seed,
        data_seed=train.seed,
        logging_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=1,  # Ray Train keeps the run's checkpoints; this is a worker's scratch
        report_to=train.trackers() or "none",
        remove_unused_columns=False,  # the rows are (token ids, prompt length) pairs
        restore_callback_states_from_checkpoint=True,  # AttemptLog's record
        disable_tqdm=True,
    )


def fsdp_config(train: TrainConfig) -> dict[str, Any]:
    """Trainer's FSDP2 settings for train.fsdp; under FSDP, activations are checkpointed by FSDP
    (Trainer's advice: the other way costs an extra all-gather in backward)."""
    return {
        "version": 2,
        "reshard_after_forward": train.fsdp == "full_shard",
        "cpu_offload": train.fsdp_offload,
        "activation_checkpointing": train.gradient_checkpointing,
        "state_dict_type": "FULL_STATE_DICT",  # checkpoints hold the whole model, for export
    }


def check_trackers(train: TrainConfig) -> None:
    """ConfigError unless every tracker in train.report_to is one Trainer knows and can import."""
    from transformers.integrations import get_available_reporting_integrations
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    usable = set(get_available_reporting_integrations())
    for name in train.trackers():
        if name not in INTEGRATION_TO_CALLBACK:
            known = ", ".join(sorted(INTEGRATION_TO_CALLBACK))
            raise ConfigError(f"config: train.report_to has unknown tracker {name!r} ({known})")
        if name not in usable:
            raise ConfigError(
                f"config: train.report_to: {name} is not installed (pip install {name})"
            )


def tracker_env(train: TrainConfig, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The driver's environment variables that train.report_to's trackers read."""
    env = os.environ if environ is None else environ
    prefixes = tuple(p for name in train.trackers() for p in TRACKER_ENV.get(name, ()))
    return {k: v for k, v in env.items() if prefixes and k.startswith(prefixes)}
