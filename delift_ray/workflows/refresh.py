"""Scheduled refresh: select again after the pool has grown, scoring only what is new.

Each refresh writes a new versioned run directory under `refresh.root` (run-0001, run-0002, ...)
and then moves the `latest` pointer to it atomically (a symlink on local disk, `latest.json` on an
object store: commit.point), so readers see either the old or the new selection, never half of
one. All runs share one block store, so pairs among rows
already seen are never scored again: only pairs that touch new ids are.

Modes: `full` selects over the whole grown pool; `continual` selects among the new rows only,
with FL conditional gain given the previous selection (the data the model was tuned on).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from typing import Any

import pyarrow as pa

from delift_ray import storage
from delift_ray.commit import committed_dir, point, pointed
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

SEEN = "seen_ids.parquet"
RUN_NAME = re.compile(r"run-(\d+)")


def latest_run(root: str) -> str | None:
    """The run directory `latest` points to, or None before the first refresh."""
    entry = pointed(root)
    if entry is None:
        return None
    run_dir = storage.join(root, entry)
    done = committed_dir(run_dir)
    if done is None or not storage.is_file(storage.join(done, "manifest.json")):
        shown = storage.display(run_dir)
        raise DeliftError(f"refresh: latest points to {shown}, which has no manifest.json")
    return run_dir


def next_run_dir(root: str, previous: str | None) -> str:
    """The next versioned run directory: one past the highest existing run-NNNN."""
    found = [storage.name(previous)] if previous is not None else []
    numbers = [int(m[1]) for n in storage.names(root) + found if (m := RUN_NAME.fullmatch(n))]
    return storage.join(root, f"run-{max(numbers, default=0) + 1:04d}")


def previous_ids(previous: str | None) -> set[str]:
    """Ids of every pool row the previous refresh saw."""
    if previous is None:
        return set()
    return set(storage.read_table(storage.join(previous, SEEN))["id"].to_pylist())


@run_scope()
def run_refresh(cfg: Config) -> RunOutputs:
    """One refresh: a new versioned run over the grown pool, then `latest` moves to it."""
    root = writable_dir(cfg.refresh.root, "refresh")
    previous = latest_run(root)
    run_dir = next_run_dir(root, previous)
    shared_store = cfg.store.uri or storage.join(root, "store")
    run_cfg = dataclasses.replace(
        cfg,
        output_dir=run_dir,
        store=dataclasses.replace(cfg.store, uri=shared_store),
    )
    chat = load_chat_template(cfg.model, [cfg.data])
    pool = read_examples(cfg.data, chat)
    seen = previous_ids(previous)
    new = [e for e in pool.examples if e.id not in seen]
    extra: dict[str, Any] = {
        "refresh": {
            "mode": cfg.refresh.mode,
            "previous_run": storage.display(previous) if previous else None,
            "rows_new": len(new),
            "rows_seen_before": len(pool.examples) - len(new),
        }
    }
    sets = {"pool": pool}
    if cfg.refresh.mode == "continual" and previous is not None:
        if not new:
            shown = storage.name(previous)
            raise DeliftError(f"refresh: no new rows since {shown}; nothing to select")
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
        storage.name(previous) if previous else "none",
        storage.display(store_uri(run_cfg)),
    )
    result = run_select(run_cfg, sets=sets, extra_manifest=extra)
    assert result is not None
    write_parquet(pa.table({"id": pa.array(pool.ids, pa.string())}), storage.join(run_dir, SEEN))
    point(root, storage.name(run_dir))
    return result


def previous_selection(
    pool: DataConfig, previous: str, chat: ChatTemplate | None = None
) -> ExampleSet:
    """The previous run's chosen subset, read back with the pool's field mapping and rendering."""
    done = committed_dir(previous)
    assert done is not None  # latest_run checked it
    manifest = json.loads(storage.read_text(storage.join(done, "manifest.json")))
    subset = storage.join(done, manifest["files"]["subset"])
    return read_examples(dataclasses.replace(pool, path=subset), chat)
