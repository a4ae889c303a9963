"""One training worker: build the model, resume from the last checkpoint, train the remaining
epochs on this rank's share of each epoch, report after every epoch.

The worker knows nothing of Ray: the gang it runs in (delift_ray.distributed.train_gang) hands
it a WorkerContext for its rank, device, checkpoints and reports. Each worker trains on its
rank::world share of a per-epoch shuffle and all workers report after every epoch; rank 0
attaches a checkpoint (trainable weights, optimizer state, loss history).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from delift_ray.config import ModelConfig, TrainConfig
from delift_ray.extras import optional_import
from delift_ray.finetune.layout import Pair, collate, response_nll
from delift_ray.models.load import load_model

MAX_GRAD_NORM = 1.0
MODEL_STATE = "model.pt"
OPTIMIZER_STATE = "optimizer.pt"
PROGRESS = "progress.json"
ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")

EpochHook = Callable[[int, int], None]  # (epoch, rank), called as each epoch starts


class WorkerContext(Protocol):
    """What a training worker needs from the gang it runs in."""

    @property
    def rank(self) -> int:
        """This worker's rank, 0 ... world - 1."""
        ...

    @property
    def world(self) -> int:
        """How many workers train together."""
        ...

    @property
    def device(self) -> Any:
        """The torch device to train on."""
        ...

    def prepare_model(self, model: Any) -> Any:
        """The model moved to the device (and wrapped for data parallelism when world > 1)."""
        ...

    def last_checkpoint(self) -> AbstractContextManager[Path | None]:
        """The directory of the run's last checkpoint while in use, or None on a first start."""
        ...

    def report(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        """Report the epoch's metrics (every rank), with a checkpoint directory (rank 0)."""
        ...


def train_worker(
    ctx: WorkerContext,
    pairs: list[Pair],
    pad_id: int,
    train: TrainConfig,
    model: ModelConfig,
    on_epoch: EpochHook | None = None,
) -> None:
    """Resume from the last checkpoint, train the remaining epochs of `train`, report each."""
    import torch

    torch.set_num_threads(1)  # one intra-op thread per reserved CPU (one per worker)
    torch.manual_seed(train.seed)
    net, _ = build_model(model, train)
    optimizer_state = None
    progress: dict[str, list] = {"losses": [], "starts": []}
    with ctx.last_checkpoint() as d:
        if d is not None:
            load_trainable(net, torch.load(d / MODEL_STATE, weights_only=True))
            optimizer_state = torch.load(d / OPTIMIZER_STATE, map_location="cpu", weights_only=True)
            progress = json.loads((d / PROGRESS).read_text())
    net = ctx.prepare_model(net)
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=train.lr)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    start = len(progress["losses"])
    progress["starts"].append(start)
    for epoch in range(start, train.epochs):
        if on_epoch is not None:
            on_epoch(epoch, ctx.rank)
        total, count = 0.0, 0
        for rows in epoch_batches(
            len(pairs), ctx.world, ctx.rank, train.batch_size, train.seed, epoch
        ):
            batch = collate([pairs[i] for i in rows], pad_id)
            nll, n = train_step(net, optimizer, {k: v.to(ctx.device) for k, v in batch.items()})
            total, count = total + nll, count + n
        progress["losses"].append(_global_mean(total, count, ctx.device))
        _report(ctx, net, optimizer, progress)


def train_step(model: Any, optimizer: Any, batch: dict[str, Any]) -> tuple[float, int]:
    """One optimizer step on the batch's mean response-token NLL; returns (summed NLL, tokens)."""
    import torch

    nll, count = response_nll(model, batch)
    loss = nll.sum() / count.sum().clamp(min=1)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
    optimizer.step()
    return float(nll.detach().sum()), int(count.sum())


def epoch_batches(
    n: int, world: int, rank: int, batch_size: int, seed: int, epoch: int
) -> list[np.ndarray]:
    """Row indices of each of this rank's batches in an epoch; every rank gets as many batches.

    The epoch's shuffle is padded to a multiple of `world` by repeating its first rows, so ranks
    step in lockstep (gradient all-reduce needs the same number of steps everywhere).
    """
    order = np.random.default_rng([seed, epoch]).permutation(n)
    order = np.resize(order, -(-n // world) * world)
    mine = order[rank::world]
    return [mine[k : k + batch_size] for k in range(0, len(mine), batch_size)]


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


def trainable_state(model: Any) -> dict[str, Any]:
    """The trainable parameters (all of them, or the LoRA adapters), on CPU."""
    return {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: Any, state: dict[str, Any]) -> None:
    """Load what trainable_state saved; RuntimeError if it does not match the model."""
    wanted = {n for n, p in model.named_parameters() if p.requires_grad}
    if set(state) != wanted:
        odd = sorted(set(state) ^ wanted)[0]
        raise RuntimeError(f"checkpoint does not match the model (e.g. parameter {odd})")
    model.load_state_dict(state, strict=False)


def _global_mean(total: float, count: int, device: Any) -> float:
    """total / count summed over all workers."""
    import torch
    import torch.distributed as dist

    t = torch.tensor([total, float(count)], dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return float(t[0] / t[1].clamp(min=1))


def _report(ctx: WorkerContext, model: Any, optimizer: Any, progress: dict[str, Any]) -> None:
    """Every worker reports the epoch's loss; rank 0 attaches the checkpoint."""
    import torch

    metrics = {"epoch": len(progress["losses"]), "loss": progress["losses"][-1]}
    with tempfile.TemporaryDirectory() as d:
        checkpoint = None
        if ctx.rank == 0:
            inner = (
                model.module
                if isinstance(model, torch.nn.parallel.DistributedDataParallel)
                else model
            )
            checkpoint = Path(d)
            torch.save(trainable_state(inner), checkpoint / MODEL_STATE)
            torch.save(optimizer.state_dict(), checkpoint / OPTIMIZER_STATE)
            (checkpoint / PROGRESS).write_text(json.dumps(progress))
        ctx.report(metrics, checkpoint)
