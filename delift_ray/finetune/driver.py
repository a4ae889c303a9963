"""Fine-tune the model on a subset with Ray Train, full or LoRA, loss on response tokens only:
the driver.

It lays the rows out (finetune.layout), fits a gang of Hugging Face Trainer workers
(finetune.worker on distributed.train_gang) that resumes from the last checkpoint after a
failure, and exports the result. The run's name hashes the model, the rows and the recipe, so
rerunning a config continues its run and a changed config starts a fresh one. After fit, the
driver loads the model of the last Trainer checkpoint, merges LoRA adapters into it and saves a
plain model directory that loads like any other.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyarrow.fs import FileType

from delift_ray import storage
from delift_ray.commit import readable_dir, staged
from delift_ray.config import Config, DataConfig, ModelConfig, TrainConfig, config_to_dict
from delift_ray.data.chat import chat_template
from delift_ray.data.read import read_examples
from delift_ray.distributed.session import run_scope
from delift_ray.distributed.train_gang import HF_CHECKPOINT, fit_gang
from delift_ray.errors import ConfigError, DeliftError
from delift_ray.extras import optional_import
from delift_ray.files import prepare_output_dir, write_json
from delift_ray.finetune.arguments import check_trackers, tracker_env
from delift_ray.finetune.layout import Layout, encode_pairs
from delift_ray.finetune.worker import AttemptLog, train_worker
from delift_ray.models.load import (
    fingerprint,
    load_model,
    load_tokenizer,
    max_length,
    model_config,
    with_absolute_path,
)
from delift_ray.versions import package_versions

SUBSET_FILES = ("subset.jsonl", "subset.parquet")
# Not part of the run's identity: where it is stored, how it survives failures, where it ends,
# who watches it.
RUN_INDEPENDENT = (
    "subset",
    "storage_path",
    "max_failures",
    "output_model",
    "use_gpu",
    "report_to",
)
TRAINER_STATE = "trainer_state.json"


@dataclass
class TrainResult:
    """Where the trained model and the manifest went, and the manifest's contents."""

    model_dir: str
    manifest_path: str
    manifest: dict[str, Any]


def subset_path(train: TrainConfig, data: DataConfig) -> str:
    """The rows to train on: train.subset (a file, or a selection's output_dir: the subset it
    committed), else data.path."""
    path = train.subset or data.path
    if storage.info(path).type != FileType.Directory:
        return path
    done = readable_dir(path, "train")
    found = [storage.join(done, n) for n in SUBSET_FILES]
    return next((f for f in found if storage.is_file(f)), done)


def output_model_path(train: TrainConfig, output_dir: str) -> str:
    """Where the trained model is saved: train.output_model, else <output_dir>/model."""
    path = train.output_model or storage.join(output_dir, "model")
    return path if storage.is_uri(path) else os.path.expanduser(path)


def storage_path(train: TrainConfig, output_dir: str) -> str:
    """Ray Train's storage: train.storage_path (absolute path or URI), else <output_dir>/train."""
    path = train.storage_path or storage.join(output_dir, "train")
    return path if storage.is_uri(path) else os.path.abspath(os.path.expanduser(path))


@run_scope()
def run_train(cfg: Config, callbacks: Sequence[Any] = ()) -> TrainResult:
    """Fine-tune per cfg.train on Ray Train; save the model and <output_dir>/train_manifest.json.

    `callbacks`, Hugging Face TrainerCallbacks, are added to every worker's Trainer (they must
    pickle: Ray ships them to the workers).
    """
    started = time.perf_counter()
    if not cfg.model.path:
        raise ConfigError("config: train needs model.path (the model to fine-tune)")
    if cfg.train.mixed_precision == "fp16" and cfg.model.dtype != "float32":
        raise ConfigError(
            "config: train.mixed_precision: fp16 needs model.dtype: float32 (its master weights)"
        )
    # Ray Train runs each worker in its own directory: a relative model.path would not resolve.
    cfg = dataclasses.replace(cfg, model=with_absolute_path(cfg.model))
    if cfg.train.method == "lora":  # on the driver: a worker's import error is a remote traceback
        optional_import("peft", "train", "train.method: lora")
    check_trackers(cfg.train)
    out = prepare_output_dir(cfg.output_dir)
    source = subset_path(cfg.train, cfg.data)
    tokenizer = load_tokenizer(cfg.model)
    chat = chat_template(tokenizer) if cfg.data.format == "messages" else None
    rows = read_examples(dataclasses.replace(cfg.data, path=source), chat)
    limit = min(cfg.train.max_length, max_length(cfg.model, model_config(cfg.model), tokenizer))
    layout = Layout.of(tokenizer, cfg.templates.add_bos)
    encoded = encode_pairs(tokenizer, layout, rows.xs, rows.ys, limit, rows.chats)
    pairs = [p for p in encoded if p is not None]
    if not pairs:
        raise DeliftError(f"train: no row of {source} fits in {limit} tokens (or none is usable)")
    base = fingerprint(cfg.model)
    name = run_name(cfg.train, base, rows.ids, layout, limit)
    storage_at = storage_path(cfg.train, cfg.output_dir)
    fit_start = time.perf_counter()
    t = cfg.train
    worker_inputs = {
        "pairs": pairs,
        "train": t,
        "model": cfg.model,
        "run_name": name,
        "callbacks": list(callbacks),
    }
    checkpoint = fit_gang(
        train_worker,
        worker_inputs,
        workers=t.workers,
        use_gpu=t.use_gpu,
        max_failures=t.max_failures,
        name=name,
        storage=storage_at,
        hint="lower train.workers" + (", or set train.use_gpu: false" if t.use_gpu else ""),
        env=tracker_env(t),
    )
    fit_s = time.perf_counter() - fit_start
    model_dir = output_model_path(cfg.train, cfg.output_dir)
    with checkpoint.as_directory() as d:
        state = json.loads(Path(d, HF_CHECKPOINT, TRAINER_STATE).read_text())
        model_fp = export_model(cfg.model, cfg.train, Path(d, HF_CHECKPOINT), model_dir)
    tokens = sum(len(ids) for ids, _ in pairs)
    response = sum(len(ids) - n_prompt for ids, n_prompt in pairs)
    manifest = {
        "subset": source,
        "rows": len(pairs),
        "rows_read": rows.n_rows_read,
        "rejected": len(rows.rejects),
        "too_long": len(encoded) - len(pairs),
        "rendering": rows.rendering,
        "method": cfg.train.method,
        "epochs": cfg.train.epochs,
        "workers": cfg.train.workers,
        "losses": [log["loss"] for log in state["log_history"] if "loss" in log],
        "attempt_start_epochs": state["stateful_callbacks"][AttemptLog.__name__]["attributes"][
            "starts"
        ],
        "optimizer_steps": state["global_step"],
        "tokens_per_epoch": tokens,
        "training_tokens": tokens * cfg.train.epochs,
        "response_tokens": response * cfg.train.epochs,
        "max_length": limit,
        "wall_s": round(time.perf_counter() - started, 3),
        "fit_s": round(fit_s, 3),
        "run_name": name,
        "storage_path": storage_at,
        "checkpoint": checkpoint.path,
        "output_model": model_dir,
        "base_model_fingerprint": base,
        "model_fingerprint": model_fp,
        "versions": package_versions(),
        "config": config_to_dict(cfg),
    }
    manifest_path = write_json(manifest, storage.join(out, "train_manifest.json"))
    return TrainResult(model_dir=model_dir, manifest_path=manifest_path, manifest=manifest)


def run_name(
    train: TrainConfig, model_fp: str, ids: Sequence[str], layout: Layout, limit: int
) -> str:
    """train-<hash of model, rows, layout and recipe>: same inputs, same run (and checkpoints)."""
    recipe = {k: v for k, v in dataclasses.asdict(train).items() if k not in RUN_INDEPENDENT}
    key = json.dumps([model_fp, list(ids), list(layout.bos), limit, recipe], sort_keys=True)
    return "train-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def export_model(model_cfg: ModelConfig, train: TrainConfig, checkpoint: Path, out: str) -> str:
    """The model of a Trainer checkpoint (LoRA adapters merged into the base), saved to `out` (a
    path or a URI) all or nothing; returns the saved model's fingerprint."""
    if train.method == "lora":
        peft = optional_import("peft", "train", "train.method: lora")
        base = load_model(model_cfg).model
        model = peft.PeftModel.from_pretrained(base, str(checkpoint)).merge_and_unload()
    else:
        model = load_model(dataclasses.replace(model_cfg, path=str(checkpoint))).model
    tokenizer = load_tokenizer(model_cfg)
    local = not storage.is_uri(out)
    if local:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    # On local disk the scratch directory sits beside `out`, so the final move is a rename.
    with tempfile.TemporaryDirectory(dir=Path(out).parent if local else None) as scratch:
        saved = Path(scratch, "model")
        model.save_pretrained(saved)
        tokenizer.save_pretrained(saved)
        model_fp = fingerprint(ModelConfig(path=str(saved), dtype=model_cfg.dtype))
        if not local:
            with staged(out) as stage:
                storage.copy_tree(str(saved), stage.directory)
        else:
            if os.path.exists(out):
                shutil.rmtree(out)
            os.replace(saved, out)
    return model_fp
