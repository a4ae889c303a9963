"""The recipe's config: each wrong train.* value is a one-line config error before any work,
trackers are checked on the driver, and their settings are passed on to the workers."""

from __future__ import annotations

import pytest

from delift_ray.config import TrainConfig, load_config
from delift_ray.errors import ConfigError
from delift_ray.finetune.arguments import check_trackers, tracker_env, training_arguments
from delift_ray.finetune.driver import run_train


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.mixed_precision=bf16", "train.mixed_precision: bf16 needs GPUs (train.use_gpu"),
        ("train.mixed_precision=fp16", "train.mixed_precision: fp16 needs GPUs"),
        ("train.fsdp=full_shard", "train.fsdp needs GPUs"),
        ("train.fsdp=hybrid_shard", "train.fsdp must be one of no, full_shard, shard_grad_op"),
        ("train.fsdp_offload=true", "train.fsdp_offload needs train.fsdp"),
        ("train.lr_scheduler=cosine_forever", "train.lr_scheduler must be one of constant,"),
        ("train.warmup_steps=10", "train.warmup_steps needs a scheduler with warmup"),
        ("train.warmup_steps=1.5", "a step count >= 0 or a fraction in [0, 1), got 1.5"),
        ("train.warmup_steps=-2", "a step count >= 0 or a fraction in [0, 1), got -2"),
        ("train.gradient_accumulation_steps=0", "train.gradient_accumulation_steps must be >= 1"),
        ("train.weight_decay=-0.1", "train.weight_decay must be >= 0"),
        ("train.report_to=,", "train.report_to must list trackers or be none"),
        ("train.gradient_checkpointing=1", "train.gradient_checkpointing must be true or false"),
    ],
)
def test_a_bad_recipe_is_a_one_line_config_error(word_pool, override, message):
    pool = word_pool(2)
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"data.path={pool}", "method=random", override], command="train")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_recipes_a_gpu_gang_may_use_are_accepted(word_pool):
    pool = word_pool(2)
    sets = ["train.use_gpu=true", "train.mixed_precision=bf16", "train.fsdp=full_shard"]
    sets += ["train.lr_scheduler=cosine", "train.warmup_steps=0.1", "train.report_to=mlflow,wandb"]
    cfg = load_config(None, [f"data.path={pool}", "method=random", *sets], command="train")
    assert cfg.train.trackers() == ["mlflow", "wandb"] and cfg.train.warmup_steps == 0.1


def test_fp16_on_half_weights_is_refused_before_any_work(word_pool, tmp_path):
    pool = word_pool(2)
    sets = ["train.use_gpu=true", "train.mixed_precision=fp16", "model.dtype=float16"]
    cfg = load_config(None, [f"data.path={pool}", "model.path=m", f"output_dir={tmp_path}", *sets])
    with pytest.raises(ConfigError, match=r"fp16 needs model\.dtype: float32"):
        run_train(cfg)


def test_trackers_are_checked_and_their_settings_passed_on(tmp_path):
    check_trackers(TrainConfig(report_to="mlflow"))  # mlflow-skinny is installed
    with pytest.raises(ConfigError, match="unknown tracker 'mlfow'"):
        check_trackers(TrainConfig(report_to="mlflow,mlfow"))
    env = {"MLFLOW_TRACKING_URI": "file:///x", "WANDB_MODE": "offline", "HOME": "/root"}
    assert tracker_env(TrainConfig(report_to="mlflow"), env) == {"MLFLOW_TRACKING_URI": "file:///x"}
    assert tracker_env(TrainConfig(), env) == {}
    args = training_arguments(TrainConfig(report_to="none"), str(tmp_path), "r")
    assert args.report_to == [] and args.lr_scheduler_type == "constant" and args.warmup_steps == 0


def test_fsdp_sharding_maps_to_trainers_fsdp2_plugin_with_whole_model_checkpoints(tmp_path):
    train = TrainConfig(
        use_gpu=True, fsdp="shard_grad_op", fsdp_offload=True, gradient_checkpointing=True
    )
    args = training_arguments(train, str(tmp_path), "r")
    plugin = args.fsdp_plugin_args
    assert plugin["fsdp_version"] == 2 and plugin["state_dict_type"] == "FULL_STATE_DICT"
    assert plugin["reshard_after_forward"] is False and plugin["cpu_offload"] is True
    # Activations are checkpointed by FSDP, not by Trainer as well.
    assert plugin["activation_checkpointing"] is True and args.activation_checkpointing is False
