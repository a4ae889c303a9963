"""The training worker's Trainer without Ray: gradient accumulation equals a bigger batch, the
loss is token-weighted over the response, checkpointing of activations changes nothing but
memory, the default schedule is constant, and a resumed Trainer records where it started."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from delift_ray.config import ModelConfig, TrainConfig
from delift_ray.finetune.arguments import training_arguments
from delift_ray.finetune.layout import Layout, encode_pairs, mean_response_loss
from delift_ray.finetune.worker import build_model, make_trainer
from delift_ray.models.load import load_tokenizer

WORDS = ["cat", "dog", "sun", "tree", "milk", "rain", "a", "elephant"]


def word_pairs(model_dir: str) -> list[Any]:
    """Reverse-the-word pairs whose responses differ in length (so token weighting matters)."""
    tokenizer = load_tokenizer(ModelConfig(path=model_dir))
    xs = [f"Instruction: Reverse the word.\nInput: {w}\n" for w in WORDS]
    ys = [f" {w[::-1] * (1 + i % 3)}" for i, w in enumerate(WORDS)]
    return encode_pairs(tokenizer, Layout.of(tokenizer, "auto"), xs, ys, 64)


def trained(
    model_dir: str, out: Path, pairs: list[Any], resume: str | None = None, **recipe: Any
) -> tuple[Any, Any]:
    """(model, trainer) after Trainer ran the recipe on `pairs` (one process, CPU)."""
    train = TrainConfig(seed=0, **recipe)
    torch.manual_seed(train.seed)
    model, tokenizer = build_model(ModelConfig(path=model_dir), train)
    args = training_arguments(train, str(out), "test")
    trainer = make_trainer(model, tokenizer, pairs, args)
    trainer.train(resume_from_checkpoint=resume)
    return model, trainer


def params(model: Any) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters() if p.requires_grad])


def test_two_accumulated_steps_of_b_rows_equal_one_step_of_2b(tiny_model_dir, tmp_path):
    pairs = word_pairs(tiny_model_dir)
    start, _ = build_model(ModelConfig(path=tiny_model_dir), TrainConfig())
    one, t1 = trained(tiny_model_dir, tmp_path / "a", pairs, batch_size=8, lr=0.01)
    two, t2 = trained(
        tiny_model_dir, tmp_path / "b", pairs, batch_size=4, gradient_accumulation_steps=2, lr=0.01
    )
    assert t1.state.global_step == t2.state.global_step == 1
    moved = (params(one) - params(start)).abs().max()
    assert moved > 1e-3  # the step did something, so equal results are not trivially equal
    torch.testing.assert_close(params(two), params(one), rtol=0, atol=1e-4)
    log_one, log_two = (t.state.log_history[0] for t in (t1, t2))
    # The step's gradient (before clipping) and loss are those of the mean over all its response
    # tokens, not of the mean of two batch means.
    assert log_two["grad_norm"] == pytest.approx(log_one["grad_norm"], rel=1e-5)
    pad_id = load_tokenizer(ModelConfig(tiny_model_dir)).pad_token_id
    full = mean_response_loss(start, pairs, pad_id)
    assert log_one["loss"] == pytest.approx(full, rel=1e-5)
    assert log_two["loss"] == pytest.approx(full, rel=1e-5)


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")
def test_activation_checkpointing_trains_lora_to_the_same_weights(tiny_model_dir, tmp_path):
    pairs = word_pairs(tiny_model_dir)
    recipe = {"method": "lora", "batch_size": 4, "lr": 0.01}
    plain, _ = trained(tiny_model_dir, tmp_path / "a", pairs, **recipe)
    ckpt, t = trained(tiny_model_dir, tmp_path / "b", pairs, gradient_checkpointing=True, **recipe)
    assert t.model.base_model.model.is_gradient_checkpointing
    torch.testing.assert_close(params(ckpt), params(plain), rtol=0, atol=1e-6)


def test_default_schedule_is_constant_and_warmup_schedules_ramp(tiny_model_dir, tmp_path):
    pairs = word_pairs(tiny_model_dir)
    _, flat = trained(tiny_model_dir, tmp_path / "a", pairs, batch_size=2, lr=0.01)
    _, ramp = trained(
        tiny_model_dir,
        tmp_path / "b",
        pairs,
        batch_size=2,
        lr=0.01,
        lr_scheduler="linear",
        warmup_steps=0.5,
    )
    assert set(flat.lr_scheduler.get_last_lr()) == {0.01}  # after all 4 steps
    assert [flat.lr_scheduler.lr_lambdas[0](s) for s in range(5)] == [1] * 5
    rates = [ramp.lr_scheduler.lr_lambdas[0](s) for s in range(5)]
    assert rates == pytest.approx([0, 0.5, 1, 0.5, 0])


def test_a_resumed_trainer_continues_the_epochs_and_records_where_it_started(
    tiny_model_dir, tmp_path
):
    pairs = word_pairs(tiny_model_dir)
    recipe = {"batch_size": 4, "lr": 0.01}
    _, first = trained(tiny_model_dir, tmp_path / "a", pairs, epochs=2, **recipe)
    (checkpoint,) = (tmp_path / "a").glob("checkpoint-*")  # the last one only is kept
    trained(tiny_model_dir, tmp_path / "b", pairs, resume=str(checkpoint), epochs=3, **recipe)
    (last,) = (tmp_path / "b").glob("checkpoint-*")
    state = json.loads((last / "trainer_state.json").read_text())
    losses = [log["loss"] for log in state["log_history"] if "loss" in log]
    assert (
        len(losses) == 3
        and losses[:2] == [log["loss"] for log in first.state.log_history if "loss" in log][:2]
    )
    assert state["stateful_callbacks"]["AttemptLog"]["attributes"]["starts"] == [0, 2]
    assert state["global_step"] == 6
