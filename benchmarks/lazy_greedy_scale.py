"""Lazy greedy's growth with n, against apricot, on the pipeline's kind of kernel.

For each n: an n x n kernel with `--per-column` scored rows per candidate column, built as the
pipeline builds one (min-max scaled raw utilities, CSR float32), and lazy greedy at `--budget`
(a fraction of n). At the smallest n, also apricot's FacilityLocationSelection (lazy optimizer,
precomputed sparse similarities, its numba loops compiled by a warm-up fit that is not timed) on
the same kernel, with both objectives recomputed the same way. Prints a Markdown table with time
ratios and the exact command. Run from the repository root:

    .venv/bin/python benchmarks/lazy_greedy_scale.py --n 100000 1000000 --per-column 64
"""

from __future__ import annotations

import argparse
import shlex
import sys
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
        cells = [f"{n:,}", f"{budget:,}", f"{obj.nnz:,}", f"{seconds:.1f}"]
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
