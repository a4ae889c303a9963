"""Scheduled refresh: select again after the pool has grown, scoring only what is new.

Each refresh writes a new versioned run directory under `refresh.root` (run-0001, run-0002, ...)
and then moves the `latest` pointer (a symlink) to it atomically, so readers see either the old
or the new selection, never half of one. All runs share one block store, so pairs among rows
already seen are never scored again: only pairs that touch new ids are.

Modes: `full` selects over the whole grown pool; `continual` selects among the new rows only,
with FL conditional gain given the previous selection (the data the model was tuned on).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from delift_ray.config import Config, DataConfig, resolve_budget, store_uri
from delift_ray.data.chat import ChatTemplate
from delift_ray.data.examples import ExampleSet
from delift_ray.data.read import read_examples
from delift_ray.distributed.session import run_scope
from delift_ray.errors import DeliftError
from delift_ray.files import writable_dir, write_parquet
from delift_ray.models.load import load_chat_template
from delift_ray.workflows.outputs import RunOutputs
from delift_ray.workflows.select import run_select

log = logging.getLogger(__name__)

LATEST = "latest"
SEEN = "seen_ids.parquet"


def latest_run(root: Path) -> Path | None:
    """The run directory `latest` points to, or None before the first refresh."""
    link = root / LATEST
    if not link.is_symlink():
        return None
    target = (root / os.readlink(link)).resolve()
    if not (target / "manifest.json").is_file():
        raise DeliftError(f"refresh: {link} points to {target}, which has no manifest.json")
    return target


def next_run_dir(root: Path, previous: Path | None) -> Path:
    """The next versioned run directory: one past the highest existing run-NNNN."""
    numbers = [int(p.name[4:]) for p in root.glob("run-[0-9]*") if p.name[4:].isdigit()]
    if previous is not None and previous.name[4:].isdigit():
        numbers.append(int(previous.name[4:]))
    return root / f"run-{max(numbers, default=0) + 1:04d}"


def point_latest(root: Path, run_dir: Path) -> None:
    """Move the `latest` symlink to run_dir atomically (new link, then rename over the old)."""
    tmp = root / f".{LATEST}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(run_dir.name, tmp)
    os.replace(tmp, root / LATEST)


def previous_ids(previous: Path | None) -> set[str]:
    """Ids of every pool row the previous refresh saw."""
    if previous is None:
        return set()
    return set(pq.read_table(previous / SEEN)["id"].to_pylist())


@run_scope()
def run_refresh(cfg: Config) -> RunOutputs:
    """One refresh: a new versioned run over the grown pool, then `latest` moves to it."""
    root = writable_dir(Path(cfg.refresh.root), "refresh")
    previous = latest_run(root)
    run_dir = next_run_dir(root, previous)
    shared_store = cfg.store.uri or str(root / "store")
    run_cfg = dataclasses.replace(
        cfg,
        output_dir=str(run_dir),
        store=dataclasses.replace(cfg.store, uri=shared_store),
    )
    chat = load_chat_template(cfg.model, [cfg.data])
    pool = read_examples(cfg.data, chat)
    seen = previous_ids(previous)
    new = [e for e in pool.examples if e.id not in seen]
    extra: dict[str, Any] = {
        "refresh": {
            "mode": cfg.refresh.mode,
            "previous_run": str(previous) if previous else None,
            "rows_new": len(new),
            "rows_seen_before": len(pool.examples) - len(new),
        }
    }
    sets = {"pool": pool}
    if cfg.refresh.mode == "continual" and previous is not None:
        if not new:
            raise DeliftError(f"refresh: no new rows since {previous.name}; nothing to select")
        sets = {
            "pool": dataclasses.replace(pool, examples=new),
            "existing": previous_selection(cfg.data, previous, chat),
        }
        run_cfg = dataclasses.replace(run_cfg, stage="continual")
        resolve_budget(cfg.budget, len(new))
    log.info(
        "refresh: %d new of %d usable rows; previous run: %s; store: %s",
        len(new),
        len(pool.examples),
        previous.name if previous else "none",
        store_uri(run_cfg),
    )
    result = run_select(run_cfg, sets=sets, extra_manifest=extra)
    assert result is not None
    write_parquet(pa.table({"id": pa.array(pool.ids, pa.string())}), run_dir / SEEN)
    point_latest(root, run_dir)
    return result


def previous_selection(
    pool: DataConfig, previous: Path, chat: ChatTemplate | None = None
) -> ExampleSet:
    """The previous run's chosen subset, read back with the pool's field mapping and rendering."""
    manifest = json.loads((previous / "manifest.json").read_text())
    subset = previous / manifest["files"]["subset"]
    return read_examples(dataclasses.replace(pool, path=str(subset)), chat)
