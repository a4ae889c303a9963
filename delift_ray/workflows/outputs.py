"""Everything a run leaves in output_dir, all or nothing (commit.staged), plus the manifest."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from delift_ray import storage
from delift_ray.commit import staged
from delift_ray.config import Config, config_to_dict
from delift_ray.data.examples import ExampleSet
from delift_ray.data.write import reject_table, write_subset
from delift_ray.files import prepare_output_dir, write_error, write_parquet, write_text
from delift_ray.selection.greedy import Selection
from delift_ray.selection.methods import METHODS, Draw, Kernels
from delift_ray.selection.stages import STAGES
from delift_ray.versions import package_versions


@dataclass
class RunOutputs:
    """Where a run's committed files are (paths or URIs) and the manifest's contents."""

    directory: str
    files: dict[str, str]
    manifest: dict[str, Any]


def write_outputs(
    cfg: Config,
    sets: dict[str, ExampleSet],
    picked: Selection | Draw,
    kernels: Kernels | None,
    timings: dict[str, float],
    fingerprint: str | None,
    extra_manifest: dict[str, Any] | None = None,
) -> RunOutputs:
    """Write selection, subset, rejects, utilities (if any), pool ids and the manifest.

    All or nothing: the files are staged and committed together once every write succeeded
    (a full disk, or a run killed while writing to an object store, leaves the previous outputs
    the ones readers see).
    """
    out = prepare_output_dir(cfg.output_dir)
    pool = sets["pool"]
    chosen = [pool.ids[k] for k in picked.indices]
    names = {
        "selection": "selection.parquet",
        "subset": f"subset.{pool.format}",
        "rejects": "rejects.parquet",
        "pool_ids": "pool_ids.parquet",
    }
    if kernels is not None and kernels.utilities is not None:
        names["utilities"] = "utilities.parquet"
    names["manifest"] = "manifest.json"
    manifest = build_manifest(cfg, sets, picked, kernels, timings, fingerprint, names)
    manifest.update(extra_manifest or {})
    rejects = [r for s in sets.values() for r in s.rejects]
    try:
        with staged(out) as stage:
            tmp = {k: stage.target(name) for k, name in names.items()}
            write_parquet(selection_table(chosen, picked), tmp["selection"])
            write_subset(pool, chosen, tmp["subset"])
            write_parquet(reject_table(rejects), tmp["rejects"])
            write_parquet(pa.table({"id": pa.array(pool.ids, pa.string())}), tmp["pool_ids"])
            if "utilities" in tmp:
                write_parquet(kernels.utilities, tmp["utilities"])  # type: ignore[union-attr]
            write_text(json.dumps(manifest, indent=2, default=str) + "\n", tmp["manifest"])
    except OSError as e:
        raise write_error("output", out, e) from None
    files = {k: stage.location(name) for k, name in names.items()}
    return RunOutputs(directory=stage.directory, files=files, manifest=manifest)


def write_rejects(output_dir: str, sets: dict[str, ExampleSet]) -> str:
    """Write rejects.parquet alone (a run that stops because no row was usable)."""
    table = reject_table([r for s in sets.values() for r in s.rejects])
    return write_parquet(table, storage.join(output_dir, "rejects.parquet"))


def selection_table(ids: list[str], picked: Selection | Draw) -> pa.Table:
    """One row per pick: id, rank (0 = first pick), gain, objective after the pick (NaN for a
    draw)."""
    if isinstance(picked, Selection):
        gains, objective = picked.gains, picked.objective
    else:
        gains = objective = np.full(len(ids), np.nan)
    return pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "rank": pa.array(np.arange(len(ids)), pa.int64()),
            "gain": pa.array(gains, pa.float64()),
            "objective": pa.array(objective, pa.float64()),
        }
    )


def build_manifest(
    cfg: Config,
    sets: dict[str, ExampleSet],
    picked: Selection | Draw,
    kernels: Kernels | None,
    timings: dict[str, float],
    fingerprint: str | None,
    files: dict[str, str],
) -> dict[str, Any]:
    """The run's record: config, versions, counts, timings, objective and its bound (None for a
    draw, whose optimizer is the method)."""
    pool = sets["pool"]
    objective_function, optimizer = None, cfg.method
    value = bound = None
    if isinstance(picked, Selection):
        objective_function, optimizer = STAGES[cfg.stage].objective_name, picked.optimizer
        value, bound = _finite(picked.value), _finite(picked.upper_bound)
    counts = {
        name: {
            "rows_read": s.n_rows_read,
            "usable": len(s.examples),
            "rejected": len(s.rejects),
            "duplicates": int(sum(s.duplicates.values())),
        }
        for name, s in sets.items()
    }
    return {
        "stage": cfg.stage,
        "method": cfg.method,
        "objective_function": objective_function,
        "optimizer": optimizer,
        "selected": len(picked.indices),
        "pool_size": len(pool.examples),
        "objective": value,
        "upper_bound": bound,
        "bound_ratio": (value / bound) if value is not None and bound else None,
        "counts": counts,
        "rendering": {name: s.rendering for name, s in sets.items()},
        "kernel": _kernel_stats(kernels),
        # the kernel and objective variant (selection's preset applied); None: no scored kernel
        "selection_variant": cfg.selection.variant() if _scored(cfg) else None,
        "timings_s": timings,
        "model_fingerprint": fingerprint,
        "files": files,
        "versions": package_versions(),
        "config": config_to_dict(cfg),
    }


def _scored(cfg: Config) -> bool:
    """Whether the run's method builds its kernels from scored utilities (the variants apply)."""
    return METHODS[cfg.method].needs == "utilities"


def _kernel_stats(kernels: Kernels | None) -> dict[str, Any] | None:
    if kernels is None:
        return None
    k = kernels.pool
    if isinstance(k, np.ndarray):
        nnz, nbytes = int(np.count_nonzero(k)), k.nbytes
    else:
        nnz, nbytes = int(k.nnz), int(k.data.nbytes + k.indices.nbytes + k.indptr.nbytes)
    return {"shape": list(k.shape), "nonzeros": nnz, "bytes": nbytes, **kernels.stats}


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None
