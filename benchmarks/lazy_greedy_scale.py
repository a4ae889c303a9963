"""Lazy greedy's growth with n, against apricot, on the pipeline's kind of kernel.

For each n: an n x n kernel with `--per-column` scored rows per candidate column, built as the
pipeline builds one (min-max scaled raw utilities, CSR float32), and lazy greedy at `--budget`
(a fraction of n). At the smallest n, also apricot's FacilityLocationSelection (lazy optimizer,
precomputed sparse similarities, its numba loops compiled by a warm-up fit that is not timed) on
the same kernel, with both objectives recomputed the same way. Lazy greedy's loop is compiled by
numba: the first call's compile time (in a child process with an empty NUMBA_CACHE_DIR) and this
process's first call (a cache load when the cache is warm) are printed first and not in the
table's times. Prints a Markdown table with time ratios and the exact command. Run from the
repository root:

    .venv/bin/python benchmarks/lazy_greedy_scale.py --n 100000 1000000 --per-column 64
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

from delift_ray.selection.greedy import lazy_greedy
from delift_ray.selection.objectives import facility_location

sys.path.insert(0, "benchmarks")
from greedy_scale import pipeline_kernel  # the same kernel as greedy_scale.py


def apricot_seconds(K, budget: int) -> tuple[float, np.ndarray]:
    """apricot's lazy facility location on K (warm-up fit first): seconds and its picks."""
    import apricot

    X = K.T.tocsr()  # apricot's precomputed X[j, i] = similarity of candidate j to point i
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        apricot.FacilityLocationSelection(2, metric="precomputed", optimizer="lazy").fit(
            X[:50, :50]
        )
        start = time.perf_counter()
        fit = apricot.FacilityLocationSelection(
            budget, metric="precomputed", optimizer="lazy", verbose=False
        ).fit(X)
    return time.perf_counter() - start, np.asarray(fit.ranking, dtype=np.int64)


def first_call_seconds() -> float:
    """Seconds of this process's first lazy greedy call, on a tiny kernel (compile or cache)."""
    K = np.random.default_rng(0).random((200, 200))
    start = time.perf_counter()
    lazy_greedy(facility_location(K), 20)
    return time.perf_counter() - start


def cold_compile_seconds() -> float:
    """first_call_seconds() in a child process whose numba cache directory starts empty."""
    code = "from lazy_greedy_scale import first_call_seconds; print(first_call_seconds())"
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "PYTHONPATH": "benchmarks:."}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
    return float(out.stdout.split()[-1])


def main() -> None:
    """Time lazy greedy at each n (and apricot at the smallest); print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--per-column", type=int, default=64)
    parser.add_argument("--budget", type=float, default=0.3)
    parser.add_argument("--no-apricot", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print("Command: `.venv/bin/python benchmarks/lazy_greedy_scale.py "
          + shlex.join(sys.argv[1:]) + "`\n")  # fmt: skip
    print(f"numba compile, empty cache: {cold_compile_seconds():.1f} s; this process's first "
          f"call: {first_call_seconds():.2f} s (not in the times below)\n")  # fmt: skip
    print("| n | budget | nonzeros | lazy s | x smallest n | evaluations | objective | apricot s "
          "| lazy speed-up | objective / apricot's |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    base = None
    for k, n in enumerate(sorted(args.n)):
        K = pipeline_kernel(n, args.per_column, args.seed)
        obj = facility_location(K)
        budget = max(1, round(args.budget * n))
        start = time.perf_counter()
        sel = lazy_greedy(obj, budget)
        seconds = time.perf_counter() - start
        base = base or seconds
        cells = [f"{n:,}", f"{budget:,}", f"{obj.nnz:,}", f"{seconds:.2f}"]
        cells += [f"{seconds / base:.2f}x", f"{sel.evaluations:,}", f"{sel.value:.2f}"]
        if k == 0 and not args.no_apricot:
            theirs, picks = apricot_seconds(K, budget)
            ratio = sel.value / obj.evaluate(picks)
            cells += [f"{theirs:.1f}", f"{theirs / seconds:.2f}x", f"{ratio:.6f}"]
        else:
            cells += ["", "", ""]
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
