"""Fine-tune the model on a subset with Ray Train: full or LoRA, loss on response tokens only.

Every example is laid out as ``[BOS] x EOS y EOS`` (the scoring layout without a template); the
labels are -100 on BOS, the prompt and its EOS, so the loss covers the response and the final
EOS. Each worker trains on its rank::world share of a per-epoch shuffle and all workers report
after every epoch; rank 0 attaches a checkpoint (trainable weights, optimizer state, loss
history). A restarted worker group resumes from the last checkpoint. The run's name hashes the
model, the rows and the recipe, so rerunning a config continues its run and a changed config
starts a fresh one. After fit, the driver rebuilds the model from the last checkpoint, merges
LoRA weights into it and saves a plain model directory that loads like any other.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from delift_ray.config import Config, ModelConfig, config_to_dict
from delift_ray.data.examples import read_examples
from delift_ray.distributed.resources import check_fits
from delift_ray.distributed.session import ray_session
from delift_ray.errors import DeliftError
from delift_ray.files import prepare_output_dir, write_json
from delift_ray.models.load import (
    fingerprint,
    load_model,
    load_tokenizer,
    max_length,
    model_config,
    with_absolute_path,
)
from delift_ray.scoring.templates import wants_bos
from delift_ray.versions import package_versions

IGNORE = -100
MAX_GRAD_NORM = 1.0
MODEL_STATE = "model.pt"
OPTIMIZER_STATE = "optimizer.pt"
PROGRESS = "progress.json"
SUBSET_FILES = ("subset.jsonl", "subset.parquet")
ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
# Not part of the run's identity: where it is stored, how it survives failures, where it ends.
RUN_INDEPENDENT = ("subset", "storage_path", "max_failures", "output_model", "use_gpu")
# The fault hook fires at the start of this epoch: by then the second epoch's report has been
# queued, which Ray allows only once the first epoch's checkpoint was collected.
FAULT_EPOCH = 2

Pair = tuple[list[int], int]  # token ids of one example, number of prompt positions


# ---------------------------------------------------------------------------------------------
# token layout and per-step math (plain functions, no Ray)


@dataclass(frozen=True)
class Layout:
    """The token layout shared by training and evaluation: [BOS] x EOS y EOS."""

    bos: tuple[int, ...]
    eos: int

    @classmethod
    def of(cls, tokenizer: Any, add_bos: str) -> Layout:
        """The layout for a tokenizer; BOS per templates.add_bos (auto/always/never)."""
        bos = (tokenizer.bos_token_id,) if wants_bos(tokenizer, add_bos) else ()
        return cls(bos=bos, eos=tokenizer.eos_token_id)

    def prompt(self, x: Sequence[int], room: int) -> list[int]:
        """[BOS] x EOS in at most `room` tokens; x loses tokens from its left if it must."""
        keep = max(room - len(self.bos) - 1, 0)
        return [*self.bos, *x[max(len(x) - keep, 0) :], self.eos]

    def pair(self, x: Sequence[int], y: Sequence[int], limit: int) -> Pair | None:
        """([BOS] x EOS y EOS, prompt length) in at most `limit` tokens; None if y cannot fit."""
        room = limit - len(y) - 1
        if room < len(self.bos) + 1:
            return None
        prompt = self.prompt(x, room)
        return [*prompt, *y, self.eos], len(prompt)


def tokenize(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, without special tokens."""
    if not texts:
        return []
    return tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]


def encode_pairs(
    tokenizer: Any, layout: Layout, xs: Sequence[str], ys: Sequence[str], limit: int
) -> list[Pair | None]:
    """The layout of each (x, y) within `limit` tokens (None where y does not fit)."""
    x_ids, y_ids = tokenize(tokenizer, xs), tokenize(tokenizer, ys)
    return [layout.pair(x, y, limit) for x, y in zip(x_ids, y_ids, strict=True)]


def collate(pairs: Sequence[Pair], pad_id: int) -> dict[str, Any]:
    """Right-padded input_ids and attention_mask, and labels that are -100 off the response."""
    import torch

    width = max(len(ids) for ids, _ in pairs)
    input_ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(pairs), width), dtype=torch.long)
    labels = torch.full((len(pairs), width), IGNORE, dtype=torch.long)
    for row, (ids, n_prompt) in enumerate(pairs):
        tokens = torch.tensor(ids, dtype=torch.long)
        input_ids[row, : len(ids)] = tokens
        attention_mask[row, : len(ids)] = 1
        labels[row, n_prompt : len(ids)] = tokens[n_prompt:]
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def response_nll(model: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
    """Per row: the summed NLL of the labelled tokens (teacher forcing) and how many there are."""
    import torch

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    target = batch["labels"][:, 1:]
    scored = target != IGNORE
    nll = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), target.clamp(min=0), reduction="none"
    )
    return (nll * scored).sum(1), scored.sum(1)


def train_step(model: Any, optimizer: Any, batch: dict[str, Any]) -> tuple[float, int]:
    """One optimizer step on the batch's mean response-token NLL; returns (summed NLL, tokens)."""
    import torch

    nll, count = response_nll(model, batch)
    loss = nll.sum() / count.sum().clamp(min=1)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
    optimizer.step()
    return float(nll.sum()), int(count.sum())


def mean_response_loss(
    model: Any, pairs: Sequence[Pair], pad_id: int, batch_size: int = 16
) -> float:
    """Token-weighted mean response NLL of `pairs` under `model`, without gradients."""
    import torch

    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(pairs), batch_size):
            batch = collate(pairs[start : start + batch_size], pad_id)
            nll, n = response_nll(model, {k: v.to(device) for k, v in batch.items()})
            total, count = total + float(nll.sum()), count + int(n.sum())
    return total / max(count, 1)


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


def build_model(cfg: Config) -> tuple[Any, Any]:
    """(model, tokenizer) to train, on CPU in train mode; LoRA-wrapped when train.method is lora."""
    lm = load_model(dataclasses.replace(cfg.model, device="cpu"))
    model = lm.model
    if cfg.train.method == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=cfg.train.lora_r,
            lora_alpha=cfg.train.lora_alpha,
            lora_dropout=cfg.train.lora_dropout,
            target_modules=lora_targets(model),
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
    model.train()
    return model, lm.tokenizer


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


# ---------------------------------------------------------------------------------------------
# the Ray Train worker


def train_loop(config: dict[str, Any]) -> None:
    """Ray Train worker: resume from the last checkpoint, train the remaining epochs, report."""
    import ray
    import ray.train
    import ray.train.torch as rtt
    import torch

    torch.set_num_threads(1)  # one intra-op thread per reserved CPU (one per worker)
    cfg: Config = config["cfg"]
    pairs: list[Pair] = ray.get(config["pairs"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.train.seed)
    model, _ = build_model(cfg)
    optimizer_state = None
    progress: dict[str, list] = {"losses": [], "starts": []}
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            load_trainable(model, torch.load(Path(d, MODEL_STATE), weights_only=True))
            optimizer_state = torch.load(
                Path(d, OPTIMIZER_STATE), map_location="cpu", weights_only=True
            )
            progress = json.loads(Path(d, PROGRESS).read_text())
    model = rtt.prepare_model(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.train.lr)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    device = rtt.get_device()
    start = len(progress["losses"])
    progress["starts"].append(start)
    for epoch in range(start, cfg.train.epochs):
        _fault_hook(config.get("fault_marker"), epoch, rank)
        total, count = 0.0, 0
        for rows in epoch_batches(
            len(pairs), world, rank, cfg.train.batch_size, cfg.train.seed, epoch
        ):
            batch = collate([pairs[i] for i in rows], config["pad_id"])
            nll, n = train_step(model, optimizer, {k: v.to(device) for k, v in batch.items()})
            total, count = total + nll, count + n
        progress["losses"].append(_global_mean(total, count, device))
        _report(model, optimizer, progress, rank)


def _global_mean(total: float, count: int, device: Any) -> float:
    """total / count summed over all workers."""
    import torch
    import torch.distributed as dist

    t = torch.tensor([total, float(count)], dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return float(t[0] / t[1].clamp(min=1))


def _report(model: Any, optimizer: Any, progress: dict[str, Any], rank: int) -> None:
    """Every worker reports the epoch's loss; rank 0 attaches the checkpoint."""
    import ray.train
    import torch

    metrics = {"epoch": len(progress["losses"]), "loss": progress["losses"][-1]}
    with tempfile.TemporaryDirectory() as d:
        checkpoint = None
        if rank == 0:
            inner = (
                model.module
                if isinstance(model, torch.nn.parallel.DistributedDataParallel)
                else model
            )
            torch.save(trainable_state(inner), Path(d, MODEL_STATE))
            torch.save(optimizer.state_dict(), Path(d, OPTIMIZER_STATE))
            Path(d, PROGRESS).write_text(json.dumps(progress))
            checkpoint = ray.train.Checkpoint.from_directory(d)
        ray.train.report(metrics, checkpoint=checkpoint)


def _fault_hook(marker: str | None, epoch: int, rank: int) -> None:
    """Fault injection for tests: once (while `marker` is missing) kill rank 0 at FAULT_EPOCH."""
    if marker and rank == 0 and epoch == FAULT_EPOCH and not os.path.exists(marker):
        Path(marker).touch()
        os._exit(1)


# ---------------------------------------------------------------------------------------------
# the driver


@dataclass
class TrainResult:
    """Where the trained model and the manifest went, and the manifest's contents."""

    model_dir: Path
    manifest_path: Path
    manifest: dict[str, Any]


def subset_path(cfg: Config) -> str:
    """The rows to train on: train.subset (a file, or a selection's output_dir), else data.path."""
    path = cfg.train.subset or cfg.data.path
    if "://" not in path and Path(path).is_dir():
        found = [Path(path, name) for name in SUBSET_FILES if Path(path, name).is_file()]
        if found:
            return str(found[0])
    return path


def output_model_path(cfg: Config) -> Path:
    """Where the trained model is saved: train.output_model, else <output_dir>/model."""
    return Path(cfg.train.output_model or Path(cfg.output_dir, "model")).expanduser()


def storage_path(cfg: Config) -> str:
    """Ray Train's storage: train.storage_path (absolute path or URI), else <output_dir>/train."""
    path = cfg.train.storage_path or str(Path(cfg.output_dir, "train"))
    return path if "://" in path else str(Path(path).expanduser().absolute())


def run_train(cfg: Config, fault_marker: str | None = None) -> TrainResult:
    """Fine-tune per cfg.train on Ray Train; save the model and <output_dir>/train_manifest.json.

    `fault_marker` is for tests: see _fault_hook.
    """
    started = time.perf_counter()
    if not cfg.model.path:
        raise DeliftError("config: train needs model.path (the model to fine-tune)")
    # Ray Train runs each worker in its own directory: a relative model.path would not resolve.
    cfg = dataclasses.replace(cfg, model=with_absolute_path(cfg.model))
    out = prepare_output_dir(cfg.output_dir)
    source = subset_path(cfg)
    rows = read_examples(dataclasses.replace(cfg.data, path=source))
    tokenizer = load_tokenizer(cfg.model)
    limit = min(cfg.train.max_length, max_length(cfg.model, model_config(cfg.model), tokenizer))
    layout = Layout.of(tokenizer, cfg.templates.add_bos)
    encoded = encode_pairs(tokenizer, layout, rows.xs, rows.ys, limit)
    pairs = [p for p in encoded if p is not None]
    if not pairs:
        raise DeliftError(f"train: no row of {source} fits in {limit} tokens (or none is usable)")
    base = fingerprint(cfg.model)
    name = run_name(cfg, base, rows.ids, layout, limit)
    storage = storage_path(cfg)
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")  # else ~2 s per report
    fit_start = time.perf_counter()
    with ray_session():
        result = _fit(cfg, pairs, tokenizer.pad_token_id, name, storage, fault_marker)
    fit_s = time.perf_counter() - fit_start
    model_dir = output_model_path(cfg)
    with result.checkpoint.as_directory() as d:
        progress = json.loads(Path(d, PROGRESS).read_text())
        export_model(cfg, Path(d, MODEL_STATE), model_dir)
    tokens = sum(len(ids) for ids, _ in pairs)
    response = sum(len(ids) - n_prompt for ids, n_prompt in pairs)
    manifest = {
        "subset": source,
        "rows": len(pairs),
        "rows_read": rows.n_rows_read,
        "rejected": len(rows.rejects),
        "too_long": len(encoded) - len(pairs),
        "method": cfg.train.method,
        "epochs": cfg.train.epochs,
        "workers": cfg.train.workers,
        "losses": progress["losses"],
        "attempt_start_epochs": progress["starts"],
        "tokens_per_epoch": tokens,
        "training_tokens": tokens * cfg.train.epochs,
        "response_tokens": response * cfg.train.epochs,
        "max_length": limit,
        "wall_s": round(time.perf_counter() - started, 3),
        "fit_s": round(fit_s, 3),
        "run_name": name,
        "storage_path": storage,
        "checkpoint": result.checkpoint.path,
        "output_model": str(model_dir),
        "base_model_fingerprint": base,
        "model_fingerprint": fingerprint(ModelConfig(path=str(model_dir), dtype=cfg.model.dtype)),
        "versions": package_versions(),
        "config": config_to_dict(cfg),
    }
    manifest_path = out / "train_manifest.json"
    write_json(manifest, manifest_path)
    return TrainResult(model_dir=model_dir, manifest_path=manifest_path, manifest=manifest)


def run_name(cfg: Config, model_fp: str, ids: Sequence[str], layout: Layout, limit: int) -> str:
    """train-<hash of model, rows, layout and recipe>: same inputs, same run (and checkpoints)."""
    recipe = {k: v for k, v in dataclasses.asdict(cfg.train).items() if k not in RUN_INDEPENDENT}
    key = json.dumps([model_fp, list(ids), list(layout.bos), limit, recipe], sort_keys=True)
    return "train-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def _fit(
    cfg: Config,
    pairs: list[Pair],
    pad_id: int,
    name: str,
    storage: str,
    fault_marker: str | None,
) -> Any:
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    t = cfg.train
    hint = "lower train.workers" + (", or set train.use_gpu: false" if t.use_gpu else "")
    check_fits(f"training on {t.workers} workers", 1, float(t.use_gpu), t.workers, hint)
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={
            "cfg": cfg,
            "pairs": ray.put(pairs),
            "pad_id": pad_id,
            "fault_marker": fault_marker,
        },
        scaling_config=ScalingConfig(num_workers=cfg.train.workers, use_gpu=cfg.train.use_gpu),
        run_config=RunConfig(
            name=name,
            storage_path=storage,
            failure_config=FailureConfig(max_failures=cfg.train.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    return trainer.fit()


def export_model(cfg: Config, state_file: Path, out: Path) -> None:
    """Rebuild the model with the checkpoint's weights (LoRA merged) and save it to `out`."""
    import torch

    model, tokenizer = build_model(cfg)
    load_trainable(model, torch.load(state_file, map_location="cpu", weights_only=True))
    if cfg.train.method == "lora":
        model = model.merge_and_unload()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
