"""Greedy at scale: central lazy vs stochastic vs RandGreeDi on a large sparse FL kernel.

The kernel is built the way the pipeline stores one (delift_ray.kernel.utility_kernel: CSR
float32, min-max scaled raw utilities), with `--per-column` random rows per candidate column.
Prints Markdown tables (memory per kernel nonzero; wall time and objective per optimizer, with
ratios to central lazy greedy) and the exact command. Run from the repository root:

    .venv/bin/python benchmarks/greedy_scale.py --n 200000 --per-column 64 --budgets 0.01 0.1
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import ray
import scipy.sparse as sp

from delift_ray.distributed.maps import task_map
from delift_ray.distributed.session import ray_session
from delift_ray.selection.greedy import Selection, lazy_greedy, stochastic_greedy
from delift_ray.selection.kernels import utility_kernel
from delift_ray.selection.objectives import facility_location
from delift_ray.selection.randgreedi import auto_parts, randgreedi


def pipeline_kernel(n: int, per_column: int, seed: int) -> sp.csr_matrix:
    """An n x n CSR float32 kernel from raw normal utilities at per_column random rows a column."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, n, n * per_column)
    cols = np.repeat(np.arange(n), per_column)
    return utility_kernel(rows, cols, rng.normal(size=n * per_column), (n, n), "minmax")


def csr_bytes(K: sp.csr_matrix) -> int:
    """Bytes of a CSR matrix's data, indices and indptr."""
    return int(K.data.nbytes + K.indices.nbytes + K.indptr.nbytes)


def timed(run: Callable[[], Selection]) -> tuple[Selection, float]:
    """A selection and its wall time in seconds."""
    start = time.perf_counter()
    sel = run()
    return sel, time.perf_counter() - start


def row(budget: int, label: str, run: tuple[Selection, float], ref: tuple[Selection, float]) -> str:
    """One Markdown table row, with ratios to the reference run (central lazy greedy)."""
    (sel, seconds), (ref_sel, ref_seconds) = run, ref
    return (
        f"| {budget} | {label} | {seconds:.1f} | {ref_seconds / seconds:.2f}x | {sel.value:.1f} | "
        f"{sel.value / ref_sel.value:.4f} | {sel.value / sel.upper_bound:.3f} | "
        f"{sel.evaluations} |"
    )


def main() -> None:
    """Build the kernel, run every optimizer at every budget, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--per-column", type=int, default=64)
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.01, 0.1])
    parser.add_argument("--parts", type=int, default=0, help="RandGreeDi parts; 0 = automatic")
    parser.add_argument("--epsilon", type=float, default=0.01, help="stochastic greedy epsilon")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    start = time.perf_counter()
    K = pipeline_kernel(args.n, args.per_column, args.seed)
    built = time.perf_counter() - start
    start = time.perf_counter()
    obj = facility_location(K)
    converted = time.perf_counter() - start
    ids = [f"{j:08x}" for j in range(args.n)]

    print(f"command: `{shlex.join([os.path.relpath(sys.executable), *sys.argv])}`")
    print(f"machine: {platform.platform()}, {os.cpu_count()} cores, {platform.python_version()}")
    print(f"kernel: {args.n} x {args.n}, {K.nnz} nonzeros ({K.nnz / args.n:.1f} per column)\n")
    print("| kernel held as | bytes | bytes / nonzero | build s |")
    print("|---|---|---|---|")
    print(
        f"| pipeline: CSR float32 (utility_kernel) | {csr_bytes(K)} | "
        f"{csr_bytes(K) / K.nnz:.2f} | {built:.1f} |"
    )
    print(
        f"| Objective: CSC float64 data + int32 rows + int64 indptr + floor | {obj.nbytes} | "
        f"{obj.nbytes / obj.nnz:.2f} | {converted:.1f} |\n"
    )

    with ray_session() as where:
        start = time.perf_counter()
        workers = int(ray.cluster_resources()["CPU"])
        tiny, names = facility_location(np.eye(64)), [str(j) for j in range(64)]
        # warm-up: workers start, import delift_ray
        randgreedi(tiny, 1, names, parts=workers, map_fn=task_map)
        warm = time.perf_counter() - start
        print(
            f"Ray: {where}, {workers} logical CPUs; warm-up (workers start, import delift_ray) "
            f"{warm:.1f} s, not counted below\n"
        )
        print(
            "| budget | optimizer | wall s | speed-up | f(S) | f / f(central lazy) | f / bound | "
            "gain evaluations |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for fraction in args.budgets:
            budget = max(1, round(fraction * args.n))
            parts = args.parts or auto_parts(args.n, budget)
            ref = timed(partial(lazy_greedy, obj, budget))
            stochastic = timed(partial(stochastic_greedy, obj, budget, args.epsilon, args.seed))
            on_ray = partial(randgreedi, obj, budget, ids, parts, args.seed, map_fn=task_map)
            distributed = timed(on_ray)
            sampled = timed(partial(on_ray, optimizer="stochastic", epsilon=args.epsilon))
            print(row(budget, "central lazy", ref, ref))
            print(row(budget, f"stochastic (eps {args.epsilon})", stochastic, ref))
            print(row(budget, f"RandGreeDi (m={parts}, lazy)", distributed, ref))
            print(row(budget, f"RandGreeDi (m={parts}, stochastic)", sampled, ref), flush=True)


if __name__ == "__main__":
    main()
