"""The whole selection at millions of rows with everything but the model: time and driver peak
RSS per stage, and their growth per doubling of rows (issue 16, part 4).

Stages, each run by the pipeline's own code (`delift_ray.scoring.stage`, the greedy and a
Parquet output): embeddings -> kNN -> plan -> store -> reduce -> greedy -> outputs.

- embeddings: SYNTHETIC, seeded, clustered unit vectors (`--dim`, clusters of about 1,000 rows),
  not a sentence model: a model's forward passes are what this benchmark leaves out.
- kNN: `--knn hnsw` is the pipeline's search (`scoring.knn.neighbours`, faiss HNSW with the
  recall sample); `--knn cluster` is a BENCHMARK-ONLY neighbour table drawn from the generator's
  clusters (each row's k neighbours: k seeded distinct rows of its own cluster), for sizes whose
  HNSW build (one thread, for reproducible pairs) does not fit the time on this machine.
- store: the BENCHMARK-ONLY scorer `BenchmarkRandomUtilities` writes every block of the plan
  with seeded random utilities (a hash of the pair) through the pipeline's `BlockWorker` and
  block store, in process. It is handed to `stage.execute` as a Python object by this script; no
  config value can select it.
- `--real-rows N` runs the same stages with the real scorer (a tiny Llama built in code, its
  pool tokenized once) at a size it can finish: the scorer is the only thing replaced.

Each size runs in a child process; the peak RSS of a stage is the process's VmHWM after it is
reset (/proc/self/clear_refs) at the stage's start. A dry run (`--dry-run-rows`, default 10M)
prints the plan and extrapolates time and memory per stage from the two largest sizes measured.
Run from the repository root:

    nice -n 10 .venv/bin/python benchmarks/scale.py --rows 500000 1000000 2000000 --knn cluster
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from delift_ray.config import ModelConfig, PairsConfig, ScoringConfig, TemplatesConfig
from delift_ray.scoring import stage as st
from delift_ray.scoring.blocks import POOL, TextSet, WorkerSpec
from delift_ray.scoring.knn import neighbours
from delift_ray.scoring.stream import PAIRS_PER_BUCKET, PairSource
from delift_ray.selection.greedy import lazy_greedy
from delift_ray.selection.objectives import facility_location

STAGES = ("embeddings", "knn", "plan", "store", "reduce", "greedy", "outputs")
CLUSTER_ROWS = 1000
MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


class _OneTokenPrompts:
    """Token counts for the benchmark scorer: one token per sequence (nothing is tokenized)."""

    def lengths(self, t: Any, i: np.ndarray, d: Any = None, j: Any = None) -> np.ndarray:
        return np.ones(len(i), np.int64)


def _uniform(keys: np.ndarray, seed: int) -> np.ndarray:
    """splitmix64 of each key (and the seed) as a float in [0, 1)."""
    with np.errstate(over="ignore"):
        z = keys.astype(np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


class BenchmarkRandomUtilities:
    """BENCHMARK ONLY, never a pipeline scorer: d0 and d1 are seeded hashes of the target and
    the pair, so every block gets the same random utilities on every run, with no model."""

    name = "benchmark-random-utilities"

    def __init__(self, n_targets: int, seed: int) -> None:
        self.n, self.seed = n_targets, seed
        self.prompts = _OneTokenPrompts()

    def encode(self, xs: list[str], ys: list[str], chat: Any = None) -> int:
        """Nothing to tokenize: the set's size."""
        return len(xs)

    def plain(self, enc: Any, i: np.ndarray) -> np.ndarray:
        """d0 of targets i: 1 + a hash in [0, 1)."""
        return 1.0 + _uniform(np.asarray(i, np.int64), self.seed)

    def pairs(self, t: Any, d: Any, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """d1 of pairs (i, j): 2 x a hash of the pair in [0, 2)."""
        key = np.asarray(j, np.int64) * self.n + np.asarray(i, np.int64)
        return 2.0 * _uniform(key, self.seed + 1)


def cluster_neighbours(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """BENCHMARK ONLY: k seeded distinct rows of each row's own cluster (never itself)."""
    rng = np.random.default_rng(seed)
    order = np.argsort(labels, kind="stable")
    sizes = np.bincount(labels)
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    out = np.empty((len(labels), k), np.int64)
    for c in np.flatnonzero(sizes):
        s = int(sizes[c])
        members = order[starts[c] : starts[c] + s]
        offsets = rng.choice(np.arange(1, s), size=min(k, s - 1), replace=False)
        out[members] = members[(np.arange(s)[:, None] + offsets[None, :]) % s]
    return out


def vm(field: str) -> int:
    """A field of /proc/self/status in bytes (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


class Stages:
    """Wall time and peak RSS of each stage (the peak reset at its start)."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, float]] = {}

    def run(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(*args), timed and its peak RSS measured as stage `name`."""
        Path("/proc/self/clear_refs").write_text("5")
        start = time.perf_counter()
        out = fn(*args)
        seconds = time.perf_counter() - start
        self.rows[name] = {"seconds": seconds, "peak_rss": vm("VmHWM"), "rss_after": vm("VmRSS")}
        print(f"  {name}: {seconds:.1f} s, peak RSS {vm('VmHWM') / 2**30:.2f} GiB",
              file=sys.stderr, flush=True)  # fmt: skip
        return out


def tiny_model(root: Path, texts: list[str]) -> str:
    """A tiny Llama and tokenizer built in code (as the tests build theirs)."""
    from delift_ray.models.tiny import save_tiny_model

    return str(save_tiny_model(root / "tiny", texts[:2000], seed=0, max_positions=256))


def one_size(rows: int, args: argparse.Namespace) -> dict[str, Any]:
    """Every stage at `rows` rows; stage figures and counts."""
    work = Path(tempfile.mkdtemp(prefix=f"delift-scale-{rows}-", dir=args.tmp))
    try:
        return _one_size(rows, args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _one_size(rows: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    stages = Stages()
    clusters = max(rows // CLUSTER_ROWS, 1)
    ids = [f"r{k:09d}" for k in range(rows)]
    real = args.real
    if real:
        topics = [f"topic {c}" for c in range(50)]
        xs = [f"Q {k}: what about {topics[k % 50]} and item {k % 97}?" for k in range(rows)]
        ys = [f"A: {topics[k % 50]} item {k % 97} is fine." for k in range(rows)]
    else:
        xs = ys = [""] * rows  # the benchmark scorer reads no text
    sets = {POOL: TextSet(ids, xs, ys)}
    scoring = ScoringConfig(
        executor="local", demos_per_block=args.demos_per_block, targets_per_plain_block=65536
    )
    store = str(work / "store")
    if real:
        model = ModelConfig(path=tiny_model(work, xs + ys))
        setup = st.prepare(model, TemplatesConfig(), scoring, store)
        scorer: Any = st.load_local_model(setup)
    else:
        job = WorkerSpec(ModelConfig(), TemplatesConfig(), scoring, 0, store, "benchmark")
        setup = st.Preparation(job, None, "benchmark", "benchmark scorer")  # type: ignore[arg-type]
        scorer = BenchmarkRandomUtilities(rows, args.seed)

    emb, labels = stages.run("embeddings", lambda: embeddings(rows, args.dim, clusters, args.seed))
    pairs = PairsConfig(mode="knn", k=args.k, ann_from_rows=0, recall_sample=args.recall_sample,
                        ann_m=args.m, ann_ef_construction=args.ef_construction)  # fmt: skip
    if args.knn == "hnsw":
        nbrs, report = stages.run("knn", neighbours, emb, emb, args.k, True, pairs, args.seed)
    else:
        nbrs = stages.run("knn", lambda: cluster_neighbours(labels, args.k, args.seed))
        report = {"method": "cluster (benchmark only)"}
    del emb
    sources = {POOL: PairSource(rows, rows, nbrs, True, 0, args.seed)}
    pool_enc = None
    if real:
        pool_enc = stages.run("tokenize", lambda: setup.prompts.encode(xs, ys))
    plan = stages.run("plan", st.plan, setup, sets, sources, pool_enc)
    del nbrs, sources
    est = st.estimate(plan)
    encoded = {POOL: pool_enc} if pool_enc is not None else None
    scored = stages.run("store", lambda: st.execute(setup, sets, plan, scorer, encoded))
    kernel, _, _ = stages.run(
        "reduce", st.reduce, setup, sets, plan, scored, "minmax", "", None, args.seed, False
    )
    budget = max(1, round(args.budget * rows))
    sel = stages.run("greedy", greedy, kernel, budget)
    nnz = int(kernel.nnz)
    del kernel
    out = work / "out"
    stages.run("outputs", lambda: write_selection(out, ids, sel))
    store_bytes = sum(f.stat().st_size for f in (work / "store").rglob("*.parquet"))
    return {
        "rows": rows,
        "stages": stages.rows,
        "pairs": est["pairs_to_score"],
        "blocks": scored.counters["blocks"],
        "nnz": nnz,
        "budget": budget,
        "objective": sel.value,
        "store_bytes": store_bytes,
        "knn": {k: v for k, v in report.items() if k in ("method", "recall_at_k", "seconds")},
        "scorer": "tiny Llama (real)" if real else BenchmarkRandomUtilities.name,
        "load": os.getloadavg()[0],
    }


def greedy(kernel: Any, budget: int) -> Any:
    """Lazy greedy on facility location over the kernel (the instruction stage's objective)."""
    return lazy_greedy(facility_location(kernel), budget)


def embeddings(rows: int, dim: int, clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """SYNTHETIC clustered unit vectors (float32) and each row's cluster: equal clusters of
    about CLUSTER_ROWS rows, each row its centre plus noise (as knn_scale.py's, equal sizes)."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(rows) % clusters)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    noise = rng.standard_normal((rows, dim), dtype=np.float32) / np.sqrt(np.float32(dim))
    x = centres[labels] + noise
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, labels


def write_selection(out: Path, ids: list[str], sel: Any) -> None:
    """The selection's ids, ranks and gains as Parquet (what outputs/selection.parquet holds)."""
    out.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "id": pa.array(np.asarray(ids, object)[sel.indices], pa.string()),
            "rank": pa.array(np.arange(len(sel.indices)), pa.int64()),
            "gain": pa.array(sel.gains, pa.float64()),
        }
    )
    pq.write_table(table, out / "selection.parquet")


def growth(a: float, b: float, n_a: int, n_b: int) -> float:
    """Growth factor per doubling of rows from (n_a, a) to (n_b, b)."""
    return (b / a) ** (1 / math.log2(n_b / n_a)) if a > 0 else float("nan")


def gib(b: float) -> str:
    return f"{b / 2**30:.2f}"


def print_tables(results: list[dict[str, Any]]) -> None:
    """Per-size stage tables and the growth per doubling against the 2.3x target."""
    names = [s for s in (*STAGES[:2], "tokenize", *STAGES[2:]) if s in results[0]["stages"]]
    head = " | ".join(f"{r['rows']:,}" for r in results)
    print(f"Scorer: {results[0]['scorer']}; kNN: {results[0]['knn'].get('method')}\n")
    print(f"| stage | seconds at {head} | peak RSS GiB at {head} |")
    print("|---|" + "---:|" * (2 * len(results)))
    for s in names:
        secs = " | ".join(f"{r['stages'][s]['seconds']:.1f}" for r in results)
        mem = " | ".join(gib(r["stages"][s]["peak_rss"]) for r in results)
        print(f"| {s} | {secs} | {mem} |")
    total = " | ".join(f"{sum(v['seconds'] for v in r['stages'].values()):.1f}" for r in results)
    peak = " | ".join(gib(max(v["peak_rss"] for v in r["stages"].values())) for r in results)
    print(f"| **whole run** | {total} | {peak} |")
    print("\n| size | pairs scored | blocks | kernel nonzeros | budget | objective | store MiB "
          "| kNN | load (1 min) after |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in results:
        knn = r["knn"].get("method", "")
        if "recall_at_k" in r["knn"]:
            knn += f", recall@k {r['knn']['recall_at_k']:.3f}"
        print(f"| {r['rows']:,} | {r['pairs']:,} | {r['blocks']:,} | {r['nnz']:,} | "
              f"{r['budget']:,} | {r['objective']:.1f} | {r['store_bytes'] / 2**20:,.0f} | "
              f"{knn} | {r['load']:.1f} |")  # fmt: skip
    if len(results) < 2:
        return
    print("\nGrowth per doubling of rows (target: at most 2.3x, time and driver peak RSS)\n")
    spans = list(itertools.pairwise(results))
    head = " | ".join(f"{a['rows']:,} -> {b['rows']:,}" for a, b in spans)
    print(f"| stage | time: {head} | peak RSS: {head} |")
    print("|---|" + "---:|" * (2 * len(spans)))
    for s in [*names, "whole run"]:
        cells = []
        for what in ("seconds", "peak_rss"):
            for a, b in spans:
                va, vb = (_figure(r, s, what) for r in (a, b))
                g = growth(va, vb, a["rows"], b["rows"])
                cells.append(f"{g:.2f}x" + ("" if g <= 2.3 else " **over**"))
        print(f"| {s} | " + " | ".join(cells) + " |")


def _figure(r: dict[str, Any], stage: str, what: str) -> float:
    values = r["stages"].values() if stage == "whole run" else [r["stages"][stage]]
    if what == "seconds":
        return sum(v["seconds"] for v in values)
    return max(v["peak_rss"] for v in values)


def dry_run(rows: int, results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """The plan at `rows` rows and time / memory per stage extrapolated from the two largest
    measured sizes' growth per doubling (the largest size's growth where only one)."""
    per_target = args.k + 1
    pairs = rows * per_target
    buckets = max(1, -(-pairs // PAIRS_PER_BUCKET))
    blocks = -(-rows // args.demos_per_block)
    print(f"\nDry run at {rows:,} rows (nothing run): plan of {pairs:,} pairs (k = {args.k} "
          f"neighbours + itself per target), {buckets:,} buckets of demonstrations on the "
          f"driver's disk, about {blocks:,} blocks of {args.demos_per_block} "
          "demonstrations")  # fmt: skip
    if not results:
        return
    last = results[-1]
    prev = results[-2] if len(results) > 1 else None
    doublings = math.log2(rows / last["rows"])
    print(f"\nEstimate from {'the growth ' + format(prev['rows'], ',') + ' -> ' if prev else ''}"
          f"{last['rows']:,} rows, extrapolated {doublings:.2f} doublings:\n")  # fmt: skip
    print("| stage | seconds (est.) | driver peak RSS GiB (est.) |")
    print("|---|---:|---:|")
    worst = 0.0
    total = 0.0
    for s, fig in last["stages"].items():
        g_t = (
            growth(prev["stages"][s]["seconds"], fig["seconds"], prev["rows"], last["rows"])
            if prev
            else 2.0
        )
        g_m = (
            growth(prev["stages"][s]["peak_rss"], fig["peak_rss"], prev["rows"], last["rows"])
            if prev
            else 2.0
        )
        t = fig["seconds"] * g_t**doublings
        m = fig["peak_rss"] * g_m**doublings
        worst, total = max(worst, m), total + t
        print(f"| {s} | {t:,.0f} | {gib(m)} |")
    store = last["store_bytes"] / max(last["pairs"], 1) * pairs
    print(f"| **whole run** | {total:,.0f} | {gib(worst)} |")
    print(f"\nMemory per node: the driver node needs about {gib(worst)} GiB for the driver "
          f"(plus the spill of the plan on its disk: about {gib(pairs * 40)} GiB at 8 bytes per "
          f"needed pair and 32 per stored one); the store holds about {gib(store)} GiB of "
          "blocks; a scoring node needs its model and its copy of the pool's encoding (not "
          "measured here: the benchmark scorer holds none).")  # fmt: skip


def main() -> None:
    """Run each size in a child process, then print the tables and the dry run."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="*", default=[500_000, 1_000_000, 2_000_000, 5_000_000])  # fmt: skip  # noqa: E501
    ap.add_argument("--dry-run-rows", type=int, default=10_000_000)
    ap.add_argument("--real-rows", type=int, default=0, help="also run the real tiny model here")
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--knn", choices=("hnsw", "cluster"), default="hnsw")
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=40)
    ap.add_argument("--recall-sample", type=int, default=1000)
    ap.add_argument("--budget", type=float, default=0.3)
    ap.add_argument("--demos-per-block", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tmp", default=None, help="where each size's store and spill go")
    ap.add_argument("--save", default=None, help="append each size's figures (JSON lines) here")
    ap.add_argument("--load", nargs="*", default=[], help="print the tables of saved figures")
    ap.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--real", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one_size(args.one, args)))
        return
    print("Command: `" + shlex.join([".venv/bin/python", *sys.argv]) + "`\n")
    print("Embeddings: SYNTHETIC (seeded clustered unit vectors); scorer: BENCHMARK ONLY "
          f"({BenchmarkRandomUtilities.name}, seeded random utilities, no model)\n")  # fmt: skip
    results = [
        r for path in args.load for r in map(json.loads, Path(path).read_text().splitlines())
    ]
    results += [child(rows, args, real=False) for rows in sorted(args.rows)]  # type: ignore[misc]
    results = sorted((r for r in results if r is not None), key=lambda r: r["rows"])
    if results:
        print_tables(results)
    dry_run(args.dry_run_rows, results, args)
    if args.real_rows:
        print(f"\nThe same stages with the real scorer (tiny Llama, in process) at "
              f"{args.real_rows:,} rows, and the benchmark scorer at the same size:\n")  # fmt: skip
        pair = [child(args.real_rows, args, real=True), child(args.real_rows, args, real=False)]
        for r in pair:
            if r is not None:
                print_tables([r])
                print()


def child(rows: int, args: argparse.Namespace, real: bool) -> dict[str, Any] | None:
    """one_size(rows) in a fresh process (its own peak RSS); None if it failed."""
    argv = list(sys.argv[1:])
    cmd = [sys.executable, __file__, *argv, "--one", str(rows)] + (["--real"] if real else [])
    print(f"{rows:,} rows ({'real scorer' if real else 'benchmark scorer'}), load "
          f"{os.getloadavg()[0]:.1f}:", file=sys.stderr, flush=True)  # fmt: skip
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        print(f"| {rows:,} rows: the child process failed (exit {done.returncode}) |")
        return None
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if args.save and not real:
        with open(args.save, "a") as f:
            f.write(json.dumps(result) + "\n")
    return result


if __name__ == "__main__":
    main()
