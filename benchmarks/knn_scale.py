"""kNN at scale: the faiss HNSW path against today's exact blocked top-k, in one run.

Synthetic clustered unit vectors (float32): `--clusters` centres uniform on the sphere, cluster
sizes from a flat Dirichlet, each row its centre plus isotropic noise of a per-cluster scale in
[0.6, 1.4] (a row's cosine to its centre is then about 0.6-0.85), normalised. Measured:

- the ANN path (`delift_ray.scoring.ann.hnsw_neighbours`, as the pipeline calls it: build in one
  thread, search on every thread) over all rows, self excluded;
- recall@k of its neighbours against exact top-k (`recall_at_k`, as the manifest records it) on a
  seeded sample of `--recall-sample` targets searched exactly against every row; that exact search
  is today's code path (`exact_neighbours`), so its time per target, times the number of rows, is
  the exact search of all rows (its cost is linear in the targets at a fixed pool);
- optionally (`--exact-rows m`) the exact search of the first m rows among themselves, scaled by
  (rows / m)^2 to all rows.

Prints a Markdown table, the load average around each step (the machine is shared) and the
command. Run from the repository root:

    .venv/bin/python benchmarks/knn_scale.py --rows 1000000 --dim 384 --k 64 --recall-sample 10000
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

import numpy as np

from delift_ray.scoring.ann import HnswSettings, hnsw_neighbours
from delift_ray.scoring.knn import recall_at_k
from delift_ray.scoring.pairs import exact_neighbours

CHUNK = 100_000  # rows generated at a time (bounds the float32 temporaries)


def clustered_unit_vectors(rows: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    """`rows` float32 unit vectors around `clusters` random centres (see the module doc)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    spread = rng.uniform(0.6, 1.4, clusters).astype(np.float32)
    label = rng.choice(clusters, size=rows, p=rng.dirichlet(np.ones(clusters)))
    out = np.empty((rows, dim), np.float32)
    for start in range(0, rows, CHUNK):
        lab = label[start : start + CHUNK]
        noise = rng.standard_normal((len(lab), dim), dtype=np.float32)
        block = centres[lab] + noise * (spread[lab, None] / np.sqrt(np.float32(dim)))
        out[start : start + CHUNK] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def load() -> str:
    """The 1-minute load average, for the table."""
    return f"{os.getloadavg()[0]:.1f}"


def main() -> None:
    """Run the comparison and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--clusters", type=int, default=0, help="0 = rows // 1000")
    ap.add_argument("--recall-sample", type=int, default=10_000)
    ap.add_argument("--exact-rows", type=int, default=0, help="also time exact on this many rows")
    ap.add_argument("--m", type=int, default=HnswSettings.m)
    ap.add_argument("--ef-construction", type=int, default=HnswSettings.ef_construction)
    ap.add_argument("--ef-search", type=int, default=HnswSettings.ef_search)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    clusters = args.clusters or max(args.rows // 1000, 1)
    settings = HnswSettings(args.m, args.ef_construction, args.ef_search)

    start = time.perf_counter()
    x = clustered_unit_vectors(args.rows, args.dim, clusters, args.seed)
    print(
        f"data: {x.shape} float32 ({x.nbytes / 2**30:.2f} GiB), {clusters} clusters, "
        f"{time.perf_counter() - start:.1f} s",
        file=sys.stderr,
        flush=True,
    )

    steps: list[tuple[str, float, str]] = []  # (what, seconds, load before -> after)

    def timed(what: str, fn):
        before, start = load(), time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
        steps.append((what, seconds, f"{before} -> {load()}"))
        print(f"{what}: {seconds:.1f} s", file=sys.stderr, flush=True)
        return result

    nbrs = timed(
        f"ANN: HNSW (M={args.m}, efConstruction={args.ef_construction}, "
        f"efSearch={args.ef_search}) build + search, {args.rows:,} rows",
        lambda: hnsw_neighbours(x, x, args.k, True, settings),
    )
    recall, sampled = timed(
        f"exact top-k of {min(args.recall_sample, args.rows):,} sampled targets "
        f"against all {args.rows:,} rows (recall reference)",
        lambda: recall_at_k(nbrs, x, x, True, args.recall_sample, args.seed),
    )
    ann_s, sample_s = steps[0][1], steps[1][1]
    exact_est = sample_s * args.rows / sampled
    if args.exact_rows:
        m = args.exact_rows
        timed(
            f"exact top-k, first {m:,} rows among themselves",
            lambda: exact_neighbours(x[:m], x[:m], args.k, True),
        )

    print(f"\n{args.rows:,} rows x {args.dim}-d, {clusters} clusters, k = {args.k}\n")
    print("| step | seconds | load average (1 min) before -> after |")
    print("|---|---|---|")
    for what, seconds, loads in steps:
        print(f"| {what} | {seconds:,.1f} | {loads} |")
    print("\n| figure | value | target |")
    print("|---|---|---|")
    print(f"| recall@{args.k} vs exact, {sampled:,} sampled targets | {recall:.4f} | >= 0.95 |")
    print(
        f"| exact at {args.rows:,} rows, from the sample (x {args.rows / sampled:,.0f}) | "
        f"{exact_est:,.0f} s | |"
    )
    print(f"| speed-up of ANN over exact (sample-based) | {exact_est / ann_s:,.1f}x | >= 20x |")
    if args.exact_rows:
        scale = (args.rows / args.exact_rows) ** 2
        quad = steps[2][1] * scale
        print(
            f"| exact at {args.rows:,} rows, from {args.exact_rows:,} rows (x {scale:,.0f}) | "
            f"{quad:,.0f} s | |"
        )
        print(
            f"| speed-up of ANN over exact ({args.exact_rows:,}-row based) | "
            f"{quad / ann_s:,.1f}x | >= 20x |"
        )
    print(f"\ncommand: .venv/bin/python {shlex.join(sys.argv)}")


if __name__ == "__main__":
    main()
