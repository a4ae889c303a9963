"""One Ray session per run: started by the first stage that needs it, reused by every later
stage and nested run, shut down when the run's outermost scope exits (Ray itself stubbed)."""

from __future__ import annotations

import pytest

from delift_ray.config import load_config
from delift_ray.distributed.session import run_scope, using_ray
from delift_ray.workflows.select import run_select


@pytest.fixture
def fake_ray(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """ray.init / is_initialized / shutdown that only record what happened."""
    import ray

    events: list[str] = []
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: events.count("init") > events.count("stop"))
    monkeypatch.setattr(ray, "init", lambda **kw: events.append("init"))
    monkeypatch.setattr(ray, "shutdown", lambda: events.append("stop"))
    return events


def test_a_run_that_needs_no_ray_starts_none(fake_ray: list[str]) -> None:
    with run_scope(), run_scope():
        pass
    assert fake_ray == []


def test_every_stage_and_nested_run_shares_the_first_stages_session(fake_ray: list[str]) -> None:
    with run_scope():
        assert fake_ray == []
        with using_ray() as kind:
            assert kind == "local" and fake_ray == ["init"]
        with run_scope(), using_ray():  # a nested run (compare's select, train, eval)
            pass
        with using_ray():
            pass
        assert fake_ray == ["init"]
    assert fake_ray == ["init", "stop"]


def test_a_stage_outside_any_run_has_a_session_of_its_own(fake_ray: list[str]) -> None:
    with using_ray():
        assert fake_ray == ["init"]
    assert fake_ray == ["init", "stop"]


def test_run_scope_as_a_decorator_makes_each_call_one_run(fake_ray: list[str]) -> None:
    @run_scope()
    def stage_twice() -> None:
        for _ in range(2):
            with using_ray():
                pass

    stage_twice()
    stage_twice()
    assert fake_ray == ["init", "stop", "init", "stop"]


def test_a_failing_run_still_shuts_its_session_down(fake_ray: list[str]) -> None:
    with pytest.raises(RuntimeError, match="stage failed"), run_scope(), using_ray():
        raise RuntimeError("stage failed")
    assert fake_ray == ["init", "stop"]


def test_a_random_selection_starts_no_ray(fake_ray: list[str], word_pool, tmp_path) -> None:
    settings = [f"data.path={word_pool(5)}", "method=random", f"output_dir={tmp_path / 'out'}"]
    result = run_select(load_config(None, [*settings, "budget=3"]))
    assert result is not None and result.manifest["selected"] == 3
    assert fake_ray == []
