"""Config: YAML + overrides into typed dataclasses; every bad value stops with one line."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from delift_ray.config import (
    COMMAND_SECTIONS,
    ActorPoolConfig,
    Config,
    load_config,
    resolve_budget,
    sections_of,
)
from delift_ray.errors import ConfigError, DeliftError
from delift_ray.models.load import resolve_device


@pytest.fixture
def pool_file(tmp_path):
    p = tmp_path / "pool.jsonl"
    p.write_text('{"instruction": "a", "output": "b"}\n')
    return p


def write_cfg(tmp_path, text: str):
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


def test_yaml_and_overrides_build_typed_config(tmp_path, pool_file):
    cfg_path = write_cfg(tmp_path, f"data: {{path: {pool_file}}}\nmodel: {{path: m}}\n")
    cfg = load_config(
        cfg_path, ["budget=12", "selection.eta=0.5", "scoring.max_batch_size=4", "seed=3"]
    )
    assert isinstance(cfg, Config)
    assert cfg.budget == 12 and isinstance(cfg.budget, int)
    assert cfg.selection.eta == 0.5
    assert cfg.scoring.max_batch_size == 4
    assert cfg.seed == 3
    assert cfg.data.path == str(pool_file)
    assert cfg.selection.optimizer == "lazy"  # default kept


def test_fraction_budget_stays_float(tmp_path, pool_file):
    cfg = load_config(None, [f"data.path={pool_file}", "model.path=m", "budget=0.25"])
    assert cfg.budget == 0.25 and isinstance(cfg.budget, float)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.pth=x", "unknown key data.pth"),
        ("colour=red", "unknown key colour"),
        ("budget=-1", "budget must be > 0"),
        ("budget=0", "budget must be > 0"),
        ("budget=1.5", "fraction > 1"),
        ("budget=lots", "budget has a bad value"),
        ("seed=1.5", "seed must be an integer"),
        (
            "method=magic",
            "method must be one of delift, delift-paper, delift-shuffled, se, random, quota, "
            "clean, full",
        ),
        ("stage=final", "stage must be one of instruction, task, continual; got 'final'"),
        ("stage=task", "stage task needs target.path"),
        ("stage=continual", "stage continual needs existing.path"),
        ("scoring.max_batch_tokens=0", "scoring.max_batch_tokens must be >= 1"),
        ("model.trust_remote_code=yes please", "must be true or false"),
        ("templates.plain=no placeholder", "templates.plain must contain {query}"),
        ("data.path=/nonexistent/pool.jsonl", "data.path does not exist"),
        ("model.path=", "method delift needs model.path"),
        ("data=3", "data must be a mapping"),
        ("nokey", "--set expects key=value"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(pool_file, override, message):
    with pytest.raises(DeliftError) as e:
        load_config(None, [f"data.path={pool_file}", "model.path=m", override])
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_or_malformed_config_file(tmp_path):
    with pytest.raises(DeliftError, match="config: file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(DeliftError, match="not valid YAML"):
        load_config(write_cfg(tmp_path, "data: [unclosed\n"))
    with pytest.raises(DeliftError, match="mapping at the top level"):
        load_config(write_cfg(tmp_path, "- a\n- b\n"))


def test_resolve_budget():
    assert resolve_budget(0.3, 100) == 30
    assert resolve_budget(0.001, 100) == 1
    assert resolve_budget(1.0, 7) == 7
    assert resolve_budget(5, 5) == 5
    with pytest.raises(DeliftError, match="larger than the pool"):
        resolve_budget(6, 5)
    with pytest.raises(DeliftError, match="no usable rows"):
        resolve_budget(0.3, 0)


def test_shipped_configs_load():
    for name in ("instruction", "task", "continual"):
        cfg = load_config(f"pipelines/configs/{name}.yaml")
        assert cfg.stage == name


# testbed: random, quota and clean draw 10 subsets at 3 budgets; se once per budget; delift,
# delift-paper and delift-shuffled once per budget in each of 2 pair modes; full once
TESTBED_ARMS = 3 * 10 * 3 + 3 + 3 * 3 * 2 + 1


@pytest.mark.parametrize(("name", "arms"), [("demo", 4), ("testbed", TESTBED_ARMS)])
def test_testbed_configs_load_once_their_data_exists(tmp_path, name, arms):
    from delift_ray.testbed.generate import PoolSpec, write
    from delift_ray.workflows.compare import plan

    paths = write(PoolSpec(n=300, test_per_kind=1, seed=1), tmp_path)
    cfg = load_config(
        f"pipelines/configs/{name}.yaml",
        [f"model.path={tmp_path}", f"data.path={paths['pool']}", f"eval.test.path={paths['test']}"],
    )
    assert len(plan(cfg)) == arms


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lora_dropout=1.5", "config: train.lora_dropout must be in [0, 1)"),
        ("train.epochs=0", "config: train.epochs must be >= 1"),
    ],
)
def test_a_command_checks_only_the_sections_it_uses(pool_file, override, message):
    base = [f"data.path={pool_file}", "model.path=m", override]
    assert load_config(None, base, command="select").train  # select does not read train
    assert load_config(None, base, command="refresh").train
    for command in ("train", "compare", None):  # None: every section
        with pytest.raises(DeliftError) as e:
            load_config(None, base, command=command)
        assert str(e.value) == message


def test_every_command_still_stops_on_unknown_keys_and_bad_types(pool_file):
    for command in COMMAND_SECTIONS:
        with pytest.raises(DeliftError, match=r"unknown key train\.dropout"):
            load_config(None, [f"data.path={pool_file}", "train.dropout=0.1"], command=command)
        with pytest.raises(DeliftError, match=r"train\.lora_dropout must be a number"):
            load_config(None, [f"data.path={pool_file}", "train.lora_dropout=x"], command=command)


def test_select_rules_do_not_stop_train_or_eval(pool_file):
    bad = [f"data.path={pool_file}", "model.path=m", "pairs.k=0", "budget=-1", "stage=task"]
    assert load_config(None, bad, command="train").pairs.k == 0
    assert load_config(None, bad, command="eval").budget == -1
    with pytest.raises(DeliftError, match="budget must be > 0"):
        load_config(None, bad, command="select")


def test_command_sections_are_config_sections():
    names = {f.name for f in dataclasses.fields(Config)}
    for command, sections in COMMAND_SECTIONS.items():
        assert set(sections) - {"run"} <= names, command
        assert set(sections) <= set(sections_of(None)), command


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("scoring.actors=0", "config: scoring.actors must be >= 1"),
        ("eval.actors=0", "config: eval.actors must be >= 1"),
        ("scoring.cpus_per_actor=-1", "config: scoring.cpus_per_actor must be >= 0"),
        ("eval.cpus_per_actor=0", "config: eval.cpus_per_actor must be > 0"),
        ("scoring.gpus_per_actor=-1", "config: scoring.gpus_per_actor must be >= 0"),
        ("eval.gpus_per_actor=-1", "config: eval.gpus_per_actor must be >= 0"),
    ],
)
def test_scoring_and_eval_share_one_actor_pool_type(pool_file, override, message):
    assert isinstance(Config().scoring, ActorPoolConfig)
    assert isinstance(Config().eval, ActorPoolConfig)
    with pytest.raises(DeliftError) as e:
        load_config(None, [f"data.path={pool_file}", "model.path=m", override])
    assert str(e.value) == message


def test_scoring_actors_may_reserve_no_cpu(pool_file):
    cfg = load_config(None, [f"data.path={pool_file}", "model.path=m", "scoring.cpus_per_actor=0"])
    assert cfg.scoring.cpus_per_actor == 0


@pytest.mark.parametrize("pool", ["scoring", "eval"])
def test_a_gpu_actor_with_a_cpu_model_is_a_config_error(pool_file, pool):
    base = [f"data.path={pool_file}", "model.path=m", f"{pool}.gpus_per_actor=1"]
    with pytest.raises(ConfigError) as e:
        load_config(None, [*base, "model.device=cpu"])
    assert str(e.value) == (
        f"config: {pool}.gpus_per_actor is 1 but model.device is cpu (each actor would hold a "
        "GPU and compute on the CPU); set model.device: auto or cuda"
    )
    assert e.value.exit_code == 2
    # the default device follows the actor: a GPU actor gets cuda, a CPU-only process the CPU
    assert load_config(None, base).model.device == "auto"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cuda:1") == "cuda:1"
    # in-process, no actor reserves a GPU: an explicit CPU device is what the user asked for
    local = load_config(None, [*base, "model.device=cpu", f"{pool}.executor=local"])
    assert local.model.device == "cpu"
