"""The training worker without Ray: a stand-in context for one rank shows it trains, checkpoints
each epoch, calls the epoch hook, and resumes from the last checkpoint where it stopped."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from delift_ray.config import ModelConfig, TrainConfig
from delift_ray.finetune.layout import Layout, encode_pairs
from delift_ray.finetune.worker import MODEL_STATE, OPTIMIZER_STATE, PROGRESS, train_worker
from delift_ray.models.load import load_tokenizer


class OneWorker:
    """A WorkerContext for a gang of one on the CPU that keeps every reported checkpoint."""

    rank, world, device = 0, 1, "cpu"

    def __init__(self, store: Path, resume_from: Path | None = None) -> None:
        self.store, self.resume_from = store, resume_from
        self.reports: list[dict[str, Any]] = []

    def prepare_model(self, model: Any) -> Any:
        return model

    @contextmanager
    def last_checkpoint(self) -> Iterator[Path | None]:
        yield self.resume_from

    def report(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        assert checkpoint is not None  # rank 0 attaches one to every report
        kept = self.store / f"epoch{metrics['epoch']}"
        shutil.copytree(checkpoint, kept)
        self.reports.append({**metrics, "checkpoint": kept})


def test_the_worker_checkpoints_every_epoch_and_resumes_where_it_stopped(
    tmp_path: Path, tiny_model_dir: str
) -> None:
    model = ModelConfig(path=tiny_model_dir)
    tokenizer = load_tokenizer(model)
    words = ["cat", "dog", "sun", "tree", "milk", "rain"]
    xs = [f"Instruction: Reverse the word.\nInput: {w}\n" for w in words]
    ys = [f" {w[::-1]}" for w in words]
    pairs = encode_pairs(tokenizer, Layout.of(tokenizer, "auto"), xs, ys, 64)
    inputs = {"pairs": pairs, "pad_id": tokenizer.pad_token_id, "model": model}
    seen: list[tuple[int, int]] = []

    def hook(epoch: int, rank: int) -> None:
        seen.append((epoch, rank))

    first = OneWorker(tmp_path)
    train_worker(first, train=TrainConfig(epochs=2, batch_size=4, lr=0.01), on_epoch=hook, **inputs)
    assert [r["epoch"] for r in first.reports] == [1, 2]
    last = first.reports[-1]["checkpoint"]
    assert {p.name for p in last.iterdir()} == {MODEL_STATE, OPTIMIZER_STATE, PROGRESS}

    again = OneWorker(tmp_path, resume_from=last)
    train_worker(again, train=TrainConfig(epochs=3, batch_size=4, lr=0.01), on_epoch=hook, **inputs)
    assert [r["epoch"] for r in again.reports] == [3]
    progress = json.loads((again.reports[-1]["checkpoint"] / PROGRESS).read_text())
    assert progress["starts"] == [0, 2] and len(progress["losses"]) == 3
    assert progress["losses"][:2] == [r["loss"] for r in first.reports]
    assert seen == [(0, 0), (1, 0), (2, 0)]
