"""One Ray session per run: started by the first stage that needs it, reused by every later
stage and nested run, shut down when the run's outermost scope exits; a `ray start` head on
this machine is joined as plain `ray.init()` would (Ray itself stubbed)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from delift_ray.config import load_config
from delift_ray.distributed import session
from delift_ray.distributed.session import local_head, ray_session, run_scope, using_ray
from delift_ray.workflows.select import run_select


@pytest.fixture
def fake_ray(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """ray.init / is_initialized / shutdown that only record what happened; no `ray start` head
    recorded (Ray's default temp dir moved to an empty one)."""
    import ray

    events: list[str] = []
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
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


def record_head(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, address: str) -> None:
    """What `ray start --head` leaves for ray.init(): the address in <Ray temp dir>/."""
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    (tmp_path / "ray").mkdir(exist_ok=True)
    (tmp_path / "ray" / "ray_current_cluster").write_text(address)


def test_local_head_is_the_recorded_head_while_it_answers(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    assert local_head() is None  # nothing recorded
    with socket.create_server(("", 0)) as gcs:  # every interface: Ray resolves 127.0.0.1
        port = gcs.getsockname()[1]
        record_head(tmp_path, monkeypatch, f"127.0.0.1:{port}")
        found = local_head()
        assert found is not None and found.endswith(f":{port}")
    assert local_head() is None  # a stale record: nothing answers there any more
    record_head(tmp_path, monkeypatch, "not an address")
    assert local_head() is None


def test_a_local_head_is_joined_without_num_cpus_and_left_running(
    fake_ray: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(session, "local_head", lambda: "10.0.0.7:6379")
    monkeypatch.setattr(ray, "init", lambda **kw: (calls.append(kw), fake_ray.append("init")))
    with ray_session() as kind:
        assert kind == "cluster" and not session.embedded()  # it may gain nodes: warn, not stop
    (kw,) = calls
    assert not {"address", "num_cpus", "include_dashboard", "dashboard_host"} & set(kw)
    assert kw["runtime_env"]["env_vars"]["HF_HUB_OFFLINE"] == "1"
    assert fake_ray == ["init", "stop"]  # stop: this driver disconnects; the head keeps running


def test_ray_address_wins_over_a_local_head(fake_ray, monkeypatch) -> None:
    import ray

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(session, "local_head", lambda: pytest.fail("looked for a local head"))
    monkeypatch.setattr(ray, "init", lambda **kw: (calls.append(kw), fake_ray.append("init")))
    with socket.create_server(("127.0.0.1", 0)) as head:
        address = f"127.0.0.1:{head.getsockname()[1]}"
        monkeypatch.setenv("RAY_ADDRESS", address)
        with ray_session() as kind:
            assert kind == "cluster"
    assert calls[0]["address"] == address
