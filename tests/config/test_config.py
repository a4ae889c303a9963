"""Config: YAML + overrides into typed dataclasses; every bad value stops with one line."""

from __future__ import annotations

import pytest

from delift_ray.config import Config, load_config, resolve_budget
from delift_ray.errors import DeliftError


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
        ("method=magic", "method must be one of delift, delift-shuffled, se, random, quota, full"),
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


@pytest.mark.parametrize(("name", "arms"), [("demo", 4), ("testbed", 3 * 10 * 2 + 3 * 3 + 1)])
def test_testbed_configs_load_once_their_data_exists(tmp_path, name, arms):
    from delift_ray.testbed.generate import PoolSpec, write
    from delift_ray.workflows.compare import plan

    paths = write(PoolSpec(n=300, test_per_kind=1, seed=1), tmp_path)
    cfg = load_config(
        f"pipelines/configs/{name}.yaml",
        [f"model.path={tmp_path}", f"data.path={paths['pool']}", f"eval.test.path={paths['test']}"],
    )
    assert len(plan(cfg)) == arms
