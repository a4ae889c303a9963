"""The testbed comparison, read back: metrics with paired differences, what each subset holds,
and exact match per kind. Reads a `delift-ray compare` directory and the testbed's pool and test
set (their hidden labels: kind, is_wrong, wrong_detectable, is_off_task, near_dup_of).

    python -m delift_ray.testbed.report --compare runs/testbed/compare \\
        --pool runs/testbed/pool.jsonl --test runs/testbed/test.jsonl --out report.md

Paired differences: a method's run with training seed s minus the mean of the random runs
trained with seed s at the same budget (random draws are spread over the seeds), then mean and
standard error over seeds. Composition of random and quota is the mean over their draws.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pyarrow.parquet as pq

from delift_ray.config import DataConfig, Method
from delift_ray.data.read import read_examples
from delift_ray.files import atomic_write_bytes
from delift_ray.selection.methods import METHODS
from delift_ray.workflows.compare import Arm

BASELINE = "random"


@dataclass(frozen=True)
class Run:
    """One (arm, training seed) of a comparison and its exact match."""

    method: str
    budget: str
    draw: str
    seed: int
    exact_match: float
    rouge_l: float

    @property
    def arm_dir(self) -> str:
        """The arm's directory name under the compare directory."""
        draw = int(self.draw) if self.draw else None
        budget = float(self.budget) if "." in self.budget else int(self.budget)
        return Arm.of_label(cast(Method, self.method), budget, draw).name


def whole_pool(method: str) -> bool:
    """Whether `method` trains on the whole pool (compared against every budget's random)."""
    return method in METHODS and METHODS[method].whole_pool


def read_runs(compare_dir: Path) -> list[Run]:
    """The rows of runs.csv."""
    with open(compare_dir / "runs.csv", encoding="utf-8") as f:
        return [
            Run(
                r["method"],
                r["budget"],
                r["draw"],
                int(r["seed"]),
                float(r["exact_match"]),
                float(r["rougeL"]),
            )
            for r in csv.DictReader(f)
        ]


def paired_differences(runs: Sequence[Run], metric: str = "exact_match") -> dict[Any, Any]:
    """{(method, budget): (mean, SE, n)} of run(seed) - mean random run(seed) at that budget.

    Full data (budget 1.0) is paired with the random runs of every budget: keys (full, budget).
    """
    base: dict[tuple[str, int], list[float]] = {}
    for r in runs:
        if r.method == BASELINE:
            base.setdefault((r.budget, r.seed), []).append(getattr(r, metric))
    budgets = sorted({b for b, _ in base}, key=float)
    diffs: dict[tuple[str, str], list[float]] = {}
    for r in runs:
        if r.method == BASELINE:
            continue
        for budget in budgets if whole_pool(r.method) else [r.budget]:
            ref = base.get((budget, r.seed))
            if ref:
                diffs.setdefault((r.method, budget), []).append(getattr(r, metric) - np.mean(ref))
    return {k: _mean_se(v) for k, v in diffs.items()}


def _mean_se(values: Sequence[float]) -> tuple[float, float, int]:
    n = len(values)
    se = float(np.std(values, ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return float(np.mean(values)), se, n


def composition(subset: Sequence[dict[str, Any]], ids: Sequence[str]) -> dict[str, Any]:
    """What a subset holds: shares of wrong (detectable / plausible), off-task and near-duplicate
    rows, near-duplicates whose original is in it too, and rows per kind."""
    n = max(len(subset), 1)
    chosen = set(ids)
    wrong = [r for r in subset if r.get("is_wrong")]
    return {
        "rows": len(subset),
        "wrong": len(wrong) / n,
        "wrong_detectable": sum(bool(r.get("wrong_detectable")) for r in wrong) / n,
        "off_task": sum(bool(r.get("is_off_task")) for r in subset) / n,
        "near_dup": sum(bool(r.get("near_dup_of")) for r in subset) / n,
        "dup_with_original": sum(r.get("near_dup_of") in chosen for r in subset) / n,
        "kinds": Counter(str(r.get("kind")) for r in subset),
    }


def mean_composition(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The mean of several subsets' compositions (kind counts averaged too)."""
    out: dict[str, Any] = {
        k: float(np.mean([p[k] for p in parts])) for k in parts[0] if k != "kinds"
    }
    kinds = {k for p in parts for k in p["kinds"]}
    out["kinds"] = {k: float(np.mean([p["kinds"].get(k, 0) for p in parts])) for k in kinds}
    return out


def read_subset(arm_dir: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The subset's records (with hidden labels) and ids of an arm's selection."""
    records = [
        json.loads(line)
        for line in (arm_dir / "select" / "subset.jsonl").read_text("utf-8").splitlines()
        if line.strip()
    ]
    ids = pq.read_table(arm_dir / "select" / "selection.parquet")["id"].to_pylist()
    return records, ids


def kind_exact_match(eval_dir: Path, test_kind: dict[str, str]) -> dict[str, float]:
    """Exact match per kind of one evaluation (eval_rows.parquet joined to the test kinds)."""
    t = pq.read_table(eval_dir / "eval_rows.parquet", columns=["id", "exact_match"]).to_pydict()
    hits: dict[str, list[float]] = {}
    for i, em in zip(t["id"], t["exact_match"], strict=True):
        hits.setdefault(test_kind[i], []).append(float(em))
    return {k: float(np.mean(v)) for k, v in hits.items()}


# ---------------------------------------------------------------------------------------------
# the report


def report(compare_dir: Path, pool_path: Path, test_path: Path) -> str:
    """The Markdown report of a testbed comparison."""
    runs = read_runs(compare_dir)
    pool = read_examples(DataConfig(path=str(pool_path)))
    test = read_examples(DataConfig(path=str(test_path)))
    test_kind = {e.id: str(e.record["kind"]) for e in test.examples}
    pool_comp = composition([e.record for e in pool.examples], pool.ids)
    groups: dict[tuple[str, str], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.method, r.budget), []).append(r)
    lines = ["## Exact match on the test set (every kind weighs the same)", ""]
    lines += metric_table(runs, groups)
    lines += ["", "## What each subset holds (random and quota: mean over draws)", ""]
    comps = {
        key: mean_composition([composition(*read_subset(compare_dir / a)) for a in arm_dirs(rs)])
        for key, rs in groups.items()
    }
    lines += composition_table(pool_comp, comps)
    for budget in sorted({b for _, b in groups if b != "1.0"}, key=float):
        lines += ["", f"### Rows per kind at budget {budget} (pool: the whole pool)", ""]
        lines += kind_table(pool_comp, {m: c for (m, b), c in comps.items() if b == budget})
    lines += ["", "## Exact match per kind (mean over runs)", ""]
    per_kind = {
        key: _mean_dicts(
            [
                kind_exact_match(compare_dir / r.arm_dir / f"seed{r.seed}" / "eval", test_kind)
                for r in rs
            ]
        )
        for key, rs in groups.items()
    }
    lines += per_kind_table(per_kind, sorted(pool_comp["kinds"]))
    return "\n".join(lines) + "\n"


def arm_dirs(runs: Sequence[Run]) -> list[str]:
    """The distinct arm directories of some runs, in order."""
    return list(dict.fromkeys(r.arm_dir for r in runs))


def _mean_dicts(ds: Sequence[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([d[k] for d in ds if k in d])) for k in ds[0]}


def metric_table(runs: Sequence[Run], groups: dict[tuple[str, str], list[Run]]) -> list[str]:
    """Per (method, budget): runs, exact match and ROUGE-L mean ± SD, paired EM - random."""
    paired = paired_differences(runs)
    lines = [
        "| budget | method | runs | exact match | ROUGE-L | EM − random (paired by seed) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for (method, budget), rs in sorted(groups.items(), key=lambda kv: (float(kv[0][1]), kv[0][0])):
        em = [r.exact_match for r in rs]
        rl = [r.rouge_l for r in rs]
        if whole_pool(method):
            diff = "; ".join(
                f"vs {b}: {_fmt_diff(paired[(method, b)])}"
                for m, b in sorted(paired, key=lambda k: float(k[1]))
                if m == method
            )
        else:
            diff = _fmt_diff(paired[(method, budget)]) if (method, budget) in paired else "—"
        lines.append(f"| {budget} | {method} | {len(rs)} | {_fmt(em)} | {_fmt(rl)} | {diff} |")
    return lines


def _fmt(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def _fmt_diff(d: tuple[float, float, int]) -> str:
    mean, se, n = d
    return f"{mean:+.4f} ± {se:.4f} (n={n})" if not math.isnan(se) else f"{mean:+.4f} (n={n})"


def composition_table(
    pool: dict[str, Any], comps: dict[tuple[str, str], dict[str, Any]]
) -> list[str]:
    """Shares of wrong, off-task and near-duplicate rows per subset, the pool's first."""
    lines = [
        "| budget | method | rows | wrong | of which detectable | off-task | near-dup "
        "| near-dup with its original | kinds present |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    by_budget = sorted(comps.items(), key=lambda kv: (float(kv[0][1]), kv[0][0]))
    ordered = [(("pool", ""), pool), *by_budget]
    for (method, budget), c in ordered:
        present = sum(v > 0 for v in c["kinds"].values())
        lines.append(
            f"| {budget} | {method} | {c['rows']:.0f} | {c['wrong']:.1%} | "
            f"{c['wrong_detectable']:.1%} | {c['off_task']:.1%} | {c['near_dup']:.1%} | "
            f"{c['dup_with_original']:.1%} | {present} |"
        )
    return lines


def kind_table(pool: dict[str, Any], comps: dict[str, dict[str, Any]]) -> list[str]:
    """Rows per kind: the pool's count and each method's (mean) count."""
    methods = sorted(comps)
    lines = [
        "| kind | pool | " + " | ".join(methods) + " |",
        "|---|" + "---:|" * (1 + len(methods)),
    ]
    for kind, n in sorted(pool["kinds"].items(), key=lambda kv: -kv[1]):
        cells = [f"{comps[m]['kinds'].get(kind, 0):.1f}" for m in methods]
        lines.append(f"| {kind} | {n} | " + " | ".join(cells) + " |")
    return lines


def per_kind_table(
    per_kind: dict[tuple[str, str], dict[str, float]], kinds: Sequence[str]
) -> list[str]:
    """Exact match per kind (rows) for each (method, budget) (columns)."""
    keys = sorted(per_kind, key=lambda k: (float(k[1]), k[0]))
    head = [m if whole_pool(m) else f"{m} {b}" for m, b in keys]
    lines = ["| kind | " + " | ".join(head) + " |", "|---|" + "---:|" * len(keys)]
    for kind in kinds:
        if kind == "None":
            continue
        cells = [f"{per_kind[k].get(kind, math.nan):.2f}" for k in keys]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> None:
    """Command line: write the report of a testbed comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", required=True, type=Path)
    parser.add_argument("--pool", required=True, type=Path)
    parser.add_argument("--test", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    text = report(args.compare, args.pool, args.test)
    atomic_write_bytes(args.out, text.encode())
    print(text, end="")


if __name__ == "__main__":
    main()
