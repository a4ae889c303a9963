"""Safe defaults (SECURITY.md): names from data never become paths, trust_remote_code is off
unless asked and reaches every loader, the embedded local Ray stays on loopback.

Pickle weights are refused by default: see test_pickle_only_weights_refused_unless_allowed in
tests/models/test_load.py (library) and test_pickle_only_model_is_refused_unread in
tests/e2e/test_hostile_input.py (CLI, with a pickle that would leave a file behind if ever loaded).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from delift_ray.config import ModelConfig, load_config
from delift_ray.distributed.session import LOCAL_ONLY_ENV, ray_session
from delift_ray.errors import DeliftError
from delift_ray.models.load import load_model
from delift_ray.models.offline import OFFLINE_ENV

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[2]
FIXED_NAME = re.compile(r"[a-z_]+(\.[a-z]+)?")  # selection.parquet, store, pairs, ...
DIGEST_NAME = re.compile(r"[0-9a-f]{16,64}(\.parquet)?")  # scoring keys and block digests
HOSTILE = [
    "../../etc/passwd",
    "/etc/shadow",
    "..\\..\\windows\\system32",
    "subset.jsonl/../../escape",
    "~/.ssh/authorized_keys",
]


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def test_names_from_data_never_become_paths(tiny_model_dir: str, tmp_path: Path) -> None:
    rows = [
        {"id": text, "instruction": text, "input": text, "output": f"{text} {i}", text: "column"}
        for i, text in enumerate(HOSTILE)
    ]
    data = tmp_path / "data" / "pool.jsonl"
    data.parent.mkdir()
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out, store, cwd = tmp_path / "out", tmp_path / "blocks", tmp_path / "cwd"
    cwd.mkdir()
    before = files_under(tmp_path)

    config = REPO / "pipelines" / "configs" / "instruction.yaml"
    args = [sys.executable, "-m", "delift_ray.cli", "select", "--config", str(config)]
    settings = {"data.path": data, "model.path": tiny_model_dir, "output_dir": out}
    settings |= {"store.uri": store, "scoring.executor": "local", "budget": 2}
    for key, value in settings.items():
        args += ["--set", f"{key}={value}"]
    proc = subprocess.run(
        args,
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)},
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr

    created = files_under(tmp_path) - before
    assert created and all(p.is_relative_to(out) or p.is_relative_to(store) for p in created)
    assert list(cwd.iterdir()) == []
    assert any(p.is_relative_to(store) for p in created), "blocks were written to the store"
    for path in created:
        parts = path.relative_to(out if path.is_relative_to(out) else store).parts
        for name in parts:
            assert FIXED_NAME.fullmatch(name) or DIGEST_NAME.fullmatch(name), path
            assert name not in {"passwd", "shadow", "escape", "authorized_keys"}, path
    ids = pq.read_table(out / "selection.parquet").column("id").to_pylist()
    assert len(ids) == 2 and all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids)
    subset = [json.loads(line) for line in (out / "subset.jsonl").read_text().splitlines()]
    assert {r["id"] for r in subset} <= set(HOSTILE)  # the data's own "id" stays data


def spy(calls: list[dict[str, Any]], original: Callable[..., Any]) -> Callable[..., Any]:
    """A stand-in for a from_pretrained classmethod that records its keyword arguments."""

    def from_pretrained(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return original(*args, **kwargs)

    return from_pretrained


@pytest.mark.parametrize("trust", [False, True])
def test_trust_remote_code_reaches_every_loader(
    tiny_model_dir: str, monkeypatch: pytest.MonkeyPatch, trust: bool
) -> None:
    import transformers

    calls: dict[str, list[dict[str, Any]]] = {}
    for name in ("AutoTokenizer", "AutoConfig", "AutoModelForCausalLM"):
        cls = getattr(transformers, name)
        calls[name] = []
        monkeypatch.setattr(cls, "from_pretrained", spy(calls[name], cls.from_pretrained))

    load_model(ModelConfig(path=tiny_model_dir, trust_remote_code=trust))

    assert all(calls.values()), calls
    assert all(kw["trust_remote_code"] is trust for c in calls.values() for kw in c)
    assert [kw["use_safetensors"] for kw in calls["AutoModelForCausalLM"]] == [True]


def test_trust_remote_code_and_pickle_off_unless_asked() -> None:
    assert ModelConfig().trust_remote_code is False
    assert ModelConfig().allow_pickle_weights is False
    pool = REPO / "pipelines" / "data" / "demo_pool.jsonl"
    for name in ("instruction", "task", "continual", "refresh"):
        path = REPO / "pipelines" / "configs" / f"{name}.yaml"
        overrides = [f"{key}.path={pool}" for key in ("data", "target", "existing")]
        model = load_config(path, overrides).model
        assert (model.trust_remote_code, model.allow_pickle_weights) == (False, False), name


def test_embedded_local_ray_binds_dashboard_to_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    for key in [*OFFLINE_ENV, *LOCAL_ONLY_ENV, "RAY_ADDRESS"]:
        monkeypatch.delenv(key, raising=False)  # restored after the test
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    monkeypatch.setattr(ray, "shutdown", lambda: None)

    with ray_session() as kind:
        assert kind == "local"

    (kw,) = calls
    assert kw["dashboard_host"] == "127.0.0.1" and kw["include_dashboard"] is False
    assert "address" not in kw  # a new local cluster, not one found on the network
    assert kw["runtime_env"]["env_vars"]["HF_HUB_OFFLINE"] == "1"
    assert os.environ["RAY_AUTH_MODE"] == "disabled"  # only for the loopback-only local Ray


def test_joining_a_cluster_keeps_its_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    for key in [*OFFLINE_ENV, *LOCAL_ONLY_ENV]:
        monkeypatch.delenv(key, raising=False)
    head = socket.create_server(("127.0.0.1", 0))  # something listening where the head is
    address = f"ray://127.0.0.1:{head.getsockname()[1]}"
    monkeypatch.setenv("RAY_ADDRESS", address)
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    monkeypatch.setattr(ray, "shutdown", lambda: None)

    with head, ray_session() as kind:
        assert kind == "cluster"

    assert calls[0]["address"] == address
    assert "RAY_AUTH_MODE" not in os.environ


def test_an_unreachable_ray_address_is_one_line_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in a fresh driver process
    free = socket.create_server(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()  # nothing listens there now
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    start = time.perf_counter()
    message = f"ray: nothing answers at RAY_ADDRESS=127.0.0.1:{port}"
    with pytest.raises(DeliftError, match=message), ray_session():
        pass
    assert time.perf_counter() - start < 10  # Ray itself retries for minutes
