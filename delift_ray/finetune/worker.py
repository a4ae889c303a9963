"""One training worker: Hugging Face Trainer on this rank's share of the rows, resumed from the
run's last checkpoint.

Trainer does the training (schedule, precision, accumulation, checkpointing, FSDP, trackers,
the data-parallel split of each epoch); the loss is the model's own over the labelled (response)
tokens of the layout's collate, averaged over all tokens of an optimizer step on every worker.
Each epoch's Trainer checkpoint goes to Ray Train (distributed.train_gang), which hands the last
one back to a restarted gang; its trainer_state.json holds the epoch losses and, through
AttemptLog, the epoch each attempt started at.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
from collections.abc import Sequence
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from delift_ray.config import ModelConfig, TrainConfig
from delift_ray.distributed.train_gang import last_checkpoint, on_ray_train
from delift_ray.extras import optional_import
from delift_ray.finetune.arguments import training_arguments
from delift_ray.finetune.layout import Pair, collate
from delift_ray.models.load import load_model

ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")


class AttemptLog(TrainerCallback, ExportableState):
    """Records the epoch each training attempt starts at; saved in every Trainer checkpoint."""

    def __init__(self) -> None:
        self.starts: list[int] = []

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Note the epoch this attempt starts at (0 or the resumed checkpoint's)."""
        self.starts.append(math.floor((state.epoch or 0) + 1e-6))

    def state(self) -> dict[str, Any]:
        """What Trainer saves in trainer_state.json and restores on resume."""
        return {"args": {}, "attributes": {"starts": self.starts}}


def make_trainer(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[Pair],
    args: Any,
    callbacks: Sequence[Any] = (),
) -> Any:
    """A Trainer of `model` on `pairs` (collated with response-only labels) per `args`."""
    from transformers import Trainer

    return Trainer(
        model=model,
        args=args,
        train_dataset=list(pairs),
        data_collator=lambda rows: collate(rows, tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=[AttemptLog(), *callbacks],
    )


def train_worker(
    pairs: list[Pair],
    train: TrainConfig,
    model: ModelConfig,
    run_name: str,
    callbacks: Sequence[Any] = (),
) -> None:
    """Inside Ray Train: train per `train`, resuming from the run's last checkpoint if any."""
    import torch
    from transformers import set_seed

    torch.set_num_threads(1)  # one intra-op thread per reserved CPU (one per worker)
    set_seed(train.seed)  # before the model: LoRA's adapters start random
    net, tokenizer = build_model(model, train)
    scratch = tempfile.mkdtemp(prefix="delift-train-")
    try:
        args = training_arguments(train, scratch, run_name)
        trainer = on_ray_train(make_trainer(net, tokenizer, pairs, args, callbacks))
        with last_checkpoint() as resume_from:
            trainer.train(resume_from_checkpoint=resume_from)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def lora_targets(model: Any) -> list[str] | str:
    """The attention projections to adapt, found by name; all linear layers if none match."""
    import torch

    names = {
        n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
    }
    found = [p for p in ATTENTION_PROJECTIONS if p in names]
    return found or "all-linear"


def build_model(model: ModelConfig, train: TrainConfig) -> tuple[Any, Any]:
    """(model, tokenizer) to train, on CPU in train mode; LoRA-wrapped when train.method is lora."""
    lm = load_model(dataclasses.replace(model, device="cpu"))
    net = lm.model
    if train.method == "lora":
        peft = optional_import("peft", "train", "train.method: lora")
        lora = peft.LoraConfig(
            r=train.lora_r,
            lora_alpha=train.lora_alpha,
            lora_dropout=train.lora_dropout,
            target_modules=lora_targets(net),
            task_type="CAUSAL_LM",
        )
        net = peft.get_peft_model(net, lora)
    net.train()
    return net, lm.tokenizer
