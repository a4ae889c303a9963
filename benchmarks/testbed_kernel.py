"""What the testbed's DELIFT kernel rewards: utilities by pair type, and the selection by row role.

    .venv/bin/python benchmarks/testbed_kernel.py --compare runs/testbed/compare \\
        --model .cache/testbed/model-KEY

Rebuilds the pool kernel of a finished `benchmarks/testbed.sh` comparison from its block store
(the config is the delift sub-run's own, so nothing is scored again), joins the pool's hidden
labels, and prints: the mean kernel value K by pair type (the target
itself, same kind, other kind; demonstrations by role); how often a row's largest kernel entry
is its own pair; and, for lazy-greedy facility location at each budget, the share of each role
in the subset, how many picks reach 90% and 99% of the objective, and the overlap with the
pipeline's selection, for the kernel as the pipeline builds it (min-max), with the self pairs
set to 0, with `clip` scaling, and with every scored pair set to 1 (the kNN pattern alone).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from delift_ray.config import load_config, store_uri
from delift_ray.scoring import stage as st
from delift_ray.selection.greedy import lazy_greedy
from delift_ray.selection.objectives import facility_location
from delift_ray.selection.stages import STAGES
from delift_ray.workflows.select import PhaseTimer, read_sets, score_delift

ROLES = ("clean", "near-dup", "wrong, detectable", "wrong, plausible", "off-task")


def role(record: dict) -> str:
    """The planted role of a pool row."""
    if record.get("is_off_task"):
        return "off-task"
    if record.get("is_wrong"):
        return "wrong, detectable" if record.get("wrong_detectable") else "wrong, plausible"
    return "near-dup" if record.get("near_dup_of") else "clean"


def pool_kernels(compare: Path, model: str) -> tuple[dict[str, sp.csr_matrix], list[dict]]:
    """({scaling: pool K} for min-max (as the delift sub-runs built it) and clip, pool records
    in K's order)."""
    path = compare / "delift-b0.3" / "select" / "manifest.json"
    if not path.exists():
        raise SystemExit(f"{path} not found: run benchmarks/testbed.sh (or pass --compare)")
    manifest = json.loads(path.read_text())
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump(manifest["config"], f)
        cfg = load_config(f.name, [f"model.path={model}", "scoring.executor=local"])
    sets = read_sets(cfg)
    setup = st.prepare(cfg.model, cfg.templates, cfg.scoring, store_uri(cfg))
    pool, enc = st.drop_unscorable(setup.prompts, sets["pool"])
    kernels = {}
    for scaling in ("minmax", "clip"):
        scaled = dataclasses.replace(
            cfg, selection=dataclasses.replace(cfg.selection, scaling=scaling)
        )
        cross = STAGES[cfg.stage].cross_set(sets)
        built = score_delift(scaled, setup, pool, enc, cross, PhaseTimer(), False)
        if built is None or built.stats.get("pairs_scored", 0):
            raise SystemExit("the store did not hold every pair: run benchmarks/testbed.sh first")
        kernels[scaling] = built.pool.tocsr()
    return kernels, [e.record for e in pool.examples]


def picks_to_reach(gains: np.ndarray, shares: tuple[float, ...]) -> list[int]:
    """How many greedy picks it takes to reach each share of the final objective."""
    f = np.cumsum(gains)
    return [int(np.searchsorted(f, q * f[-1])) + 1 for q in shares]


def main() -> None:
    """Print the tables."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--compare", type=Path, default=Path("runs/testbed/compare"))
    p.add_argument("--model", required=True, help="the comparison's base model directory")
    p.add_argument("--budgets", default="0.1,0.3,0.5")
    args = p.parse_args()
    kernels, records = pool_kernels(args.compare, args.model)
    k = kernels["minmax"]
    n = k.shape[0]
    kinds = np.array([str(r["kind"]) for r in records])
    roles = np.array([role(r) for r in records])
    coo = k.tocoo()
    i, j, v = coo.row, coo.col, coo.data
    self_pair = i == j
    same = (kinds[i] == kinds[j]) & ~self_pair
    print(f"pool {n} rows, kernel {k.nnz} pairs (min-max scaled, as the sub-runs selected)\n")
    print("| pairs | count | mean K |\n|---|---:|---:|")
    for name, sel in (
        ("the target itself (i = j)", self_pair),
        ("same kind, i != j", same),
        ("other kind", ~same & ~self_pair),
    ):
        print(f"| {name} | {int(sel.sum())} | {v[sel].mean():.3f} |")
    print(
        "\n| demonstration j's role | pairs (i != j) | mean K over its targets "
        "| mean K, same-kind targets |"
    )
    print("|---|---:|---:|---:|")
    for r in ROLES:
        sel = (roles[j] == r) & ~self_pair
        print(f"| {r} | {int(sel.sum())} | {v[sel].mean():.3f} | {v[sel & same].mean():.3f} |")
    dense_rows = k.toarray()
    own_best = np.argmax(dense_rows, axis=1) == np.arange(n)
    print("\n| target i's role | rows | K[i, i] | best K[i, j], j != i | row max is K[i, i] |")
    print("|---|---:|---:|---:|---:|")
    no_self = dense_rows.copy()
    np.fill_diagonal(no_self, 0.0)
    for r in ROLES:
        rows = roles == r
        print(
            f"| {r} | {int(rows.sum())} | {np.diag(dense_rows)[rows].mean():.3f} | "
            f"{no_self[rows].max(axis=1).mean():.3f} | {own_best[rows].mean():.1%} |"
        )
    pool_share = {r: float((roles == r).mean()) for r in ROLES}
    pattern = k.copy()
    pattern.data[:] = 1.0
    variants = {
        "min-max (as built)": k,
        "min-max, self pairs 0": sp.csr_matrix(no_self),
        "clip": kernels["clip"],
        "pattern only (every scored pair 1)": pattern,
    }
    rare = min(set(kinds), key=lambda x: (kinds == x).sum())
    print(
        "\nFacility location, lazy greedy, offline. Overlap: share of the picks that the "
        "min-max (as built) selection of the same budget also has.\n"
    )
    print(
        "| budget | kernel | picks to 90% / 99% of f | overlap | "
        + " | ".join(ROLES)
        + f" | {rare} rows |"
    )
    print("|---|---|---:|---:|" + "---:|" * (len(ROLES) + 1))
    print(
        "| | pool | | | "
        + " | ".join(f"{pool_share[r]:.1%}" for r in ROLES)
        + f" | {int((kinds == rare).sum())} |"
    )
    for budget in (float(b) for b in args.budgets.split(",")):
        b = round(budget * n)
        built = None
        for name, kernel in variants.items():
            sel = lazy_greedy(facility_location(kernel), b)
            picks = np.asarray(sel.indices)
            built = set(picks) if built is None else built
            reach = picks_to_reach(np.asarray(sel.gains), (0.9, 0.99))
            shares = " | ".join(f"{(roles[picks] == r).mean():.1%}" for r in ROLES)
            overlap = len(built & set(picks)) / b
            print(
                f"| {budget} | {name} | {reach[0]} / {reach[1]} | {overlap:.0%} | {shares} | "
                f"{int((kinds[picks] == rare).sum())} |"
            )


if __name__ == "__main__":
    main()
