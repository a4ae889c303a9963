"""kNN-sparse vs dense DELIFT: pairs scored and selection quality judged on the dense kernel.

    .venv/bin/python benchmarks/knn_vs_dense.py --n 2000 --k 32 --budget 0.3

Builds a synthetic pool of n instruction rows (7 kinds, imbalanced) and trains the tiny
demo-size model on it (cached), or takes `--pool` and `--model` (e.g. a testbed pool and base
model); scores every pair once (dense, into a block store), then selects with kNN pairs (k
nearest by sentence embedding + self), and with k/2 nearest + k/2 random pairs
(`pairs.random_k`), under both scalings. The kNN runs find all their pairs in the store, so the
dense scoring is paid once; "pairs needed" is what a kNN run scores on a fresh store. Quality is
the gain over random subsets of the same size relative to the dense selection's gain, on the
dense kernel: (f(knn) - f(random)) / (f(dense) - f(random)).

Then, offline from the dense utilities (nothing scored): the same measure for other ways of
choosing k pairs per target (k nearest by sentence or by the model's own embeddings, 2k nearest,
k/2 nearest + k/2 random, k random, and three oracles that know U: each target's k highest-utility
demonstrations, its 2 highest, and its k highest under the best rank-50 approximation of U) at
each of --sweep-budgets, and for each way the share of targets whose best demonstration it
scores; how flat the top of each row is; and what each target's best demonstration is (same
kind? a wrong or off-task row, where the pool says so?).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import string
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import scipy.sparse as sp

from delift_ray.config import DataConfig, EmbedderConfig, load_config
from delift_ray.data.examples import Example
from delift_ray.data.read import read_examples
from delift_ray.models.demo_model import ensure_demo_model
from delift_ray.models.embed import embed_texts, model_embeddings
from delift_ray.scoring.pairs import knn_pairs, random_pairs, union_pairs
from delift_ray.selection.greedy import lazy_greedy
from delift_ray.selection.kernels import scale_utilities
from delift_ray.selection.objectives import Objective, facility_location
from delift_ray.workflows.select import run_select

KINDS = {  # kind: (weight, instruction, make(rng) -> (input, output))
    "add": (6, "Add the two numbers.", lambda r: _add(r)),
    "reverse": (5, "Reverse the word.", lambda r: _word(r, lambda w: w[::-1])),
    "upper": (4, "Write the word in capital letters.", lambda r: _word(r, str.upper)),
    "sort": (3, "Sort the numbers from smallest to largest.", lambda r: _sort(r)),
    "first": (2, "Give the first letter of the word.", lambda r: _word(r, lambda w: w[0])),
    "count": (2, "How many letters does the word have?", lambda r: _word(r, lambda w: str(len(w)))),
    "repeat": (1, "Repeat the word twice.", lambda r: _word(r, lambda w: f"{w} {w}")),
}


def _word(r: random.Random, f) -> tuple[str, str]:
    w = "".join(r.choice(string.ascii_lowercase) for _ in range(r.randint(3, 7)))
    return w, f(w)


def _add(r: random.Random) -> tuple[str, str]:
    a, b = r.randint(1, 99), r.randint(1, 99)
    return f"{a} {b}", str(a + b)


def _sort(r: random.Random) -> tuple[str, str]:
    xs = [r.randint(1, 99) for _ in range(3)]
    return " ".join(map(str, xs)), " ".join(map(str, sorted(xs)))


def make_pool(n: int, path: Path, seed: int = 0) -> None:
    """n synthetic rows (kind-weighted), unique by content."""
    r = random.Random(seed)
    kinds, weights = zip(*((k, w) for k, (w, _, _) in KINDS.items()))
    rows, seen = [], set()
    while len(rows) < n:
        kind = r.choices(kinds, weights)[0]
        _, instruction, make = KINDS[kind]
        inp, out = make(r)
        if (kind, inp) not in seen:
            seen.add((kind, inp))
            rows.append({"instruction": instruction, "input": inp, "output": out, "kind": kind})
    path.write_text("".join(json.dumps(x) + "\n" for x in rows))


def select(base: list[str], *extra: str):
    """Run the pipeline; returns (selection ids, manifest)."""
    result = run_select(load_config(None, [*base, *extra]))
    return pq.read_table(result.files["selection"])["id"].to_pylist(), result.manifest


Pairs = tuple[np.ndarray, np.ndarray]


def dense_utilities(utilities: Path, ids: list[str]) -> np.ndarray:
    """The dense pool U (n x n, rows = targets) from utilities.parquet, in `ids` order."""
    t = pq.read_table(utilities).to_pandas()
    t = t[t["kernel"] == "pool"]
    pos = {x: n for n, x in enumerate(ids)}
    u = np.full((len(ids), len(ids)), np.nan)
    u[t["target_id"].map(pos), t["demo_id"].map(pos)] = t["u"].to_numpy()
    return u


def without_self(u: np.ndarray) -> np.ndarray:
    """U with each target's own pair set to -inf (so row maxima and rankings skip it)."""
    others = u.copy()
    np.fill_diagonal(others, -np.inf)
    return others


def strategies(others: np.ndarray, examples: list[Example], model: str, k: int) -> dict[str, Pairs]:
    """Per target, k demonstrations (plus itself) chosen several ways, as (i, j) pairs in the
    order of `examples` (the rows of `others`, U without self pairs)."""
    texts = [e.x + e.y for e in examples]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lm = AutoModelForCausalLM.from_pretrained(model).eval()
    own = model_embeddings(lm, AutoTokenizer.from_pretrained(model), texts)
    sentence = embed_texts(texts, EmbedderConfig())
    n = len(texts)
    itself = (np.arange(n), np.arange(n))
    ranked = np.argsort(-others, axis=1)
    guess = without_self(low_rank(others, RANK))
    return {
        f"sentence k={k}": knn_pairs(sentence, sentence, k, True),
        f"sentence k={2 * k}": knn_pairs(sentence, sentence, 2 * k, True),
        f"self k={k}": knn_pairs(own, own, k, True),
        f"sentence k={k // 2} + random {k - k // 2}": union_pairs(
            knn_pairs(sentence, sentence, k // 2, True), random_pairs(n, n, k - k // 2, 0)
        ),
        f"random {k}": union_pairs(random_pairs(n, n, k, 0), itself),
        f"oracle: top {k} by utility": row_top(ranked, k),
        "oracle: top 2 by utility": row_top(ranked, 2),
        f"oracle: top {k} of U's rank-{RANK} fit": row_top(np.argsort(-guess, axis=1), k),
    }


RANK = 50  # of the oracle low-rank fit of U (how close it comes is printed)


def row_top(ranked: np.ndarray, k: int) -> Pairs:
    """Each row's first k columns of `ranked` (columns by row, best first), plus itself."""
    n = len(ranked)
    itself = (np.arange(n), np.arange(n))
    return union_pairs((np.repeat(np.arange(n), k), ranked[:, :k].ravel()), itself)


def low_rank(others: np.ndarray, rank: int) -> np.ndarray:
    """The best rank-`rank` approximation of U (self pairs at U's row mean), by SVD."""
    u = np.where(np.isfinite(others), others, 0.0)
    np.fill_diagonal(u, u.sum(axis=1) / (len(u) - 1))
    left, s, right = np.linalg.svd(u, full_matrices=False)
    approx = (left[:, :rank] * s[:rank]) @ right[:rank]
    r = np.corrcoef(approx.ravel(), u.ravel())[0, 1]
    print(f"The oracle rank-{rank} fit of U correlates {r:.4f} with U (self pairs at row means).")
    return approx


def relative_gain(f: Objective, picks: np.ndarray, best: float, f_random: float) -> float:
    """(f(picks) - f(random)) / (f(dense) - f(random))."""
    return (f.evaluate(picks) - f_random) / (best - f_random)


def sweep(
    u: np.ndarray, others: np.ndarray, ways: dict[str, Pairs], budgets: list[float], randoms: int
) -> None:
    """Print the relative gain of each way of choosing pairs at each budget, both scalings, and
    how flat the top of each row of `others` (U without self pairs) is."""
    n = len(u)
    print("\nOffline, from the dense utilities (sparse kernel scaled over its own pairs, as the")
    print("pipeline does; judged on the dense kernel of the same scaling):\n")
    print("| judged on | budget | picks | " + " | ".join(ways) + " |")
    print("|---|---:|---:|" + "---:|" * len(ways))
    for scaling in ("minmax", "clip"):
        f = facility_location(scale_utilities(u.ravel(), scaling).reshape(n, n))
        for budget in budgets:
            b = round(budget * n)
            best = lazy_greedy(f, b).value
            rng = np.random.default_rng(0)
            f_rand = float(np.mean([f.evaluate(rng.permutation(n)[:b]) for _ in range(randoms)]))
            cells = []
            for i, j in ways.values():
                sparse = sp.csr_matrix((scale_utilities(u[i, j], scaling), (i, j)), shape=(n, n))
                picks = lazy_greedy(facility_location(sparse), b).indices
                cells.append(f"{relative_gain(f, picks, best, f_rand):.2f}")
            print(f"| dense {scaling} | {budget} | {b} | " + " | ".join(cells) + " |")
    best = others.argmax(axis=1)
    found = [best_scored(i, j, best) for i, j in ways.values()]
    print("| targets whose best demonstration is scored | | | " + " | ".join(found) + " |")
    ranked = np.sort(others, axis=1)[:, ::-1]  # best first; the self pair (-inf) last
    tops = ", ".join(f"#{r} {ranked[:, r - 1].mean():.4f}" for r in (1, 2, 3, 4, 10, 33) if r < n)
    print(
        f"\nMean over targets of the U of a target's r-th best demonstration: {tops}; of its "
        f"median one {np.median(ranked[:, :-1], axis=1).mean():.4f}."
    )


def best_scored(i: np.ndarray, j: np.ndarray, best: np.ndarray) -> str:
    """Share of targets t whose highest-utility demonstration best[t] is among the pairs (i, j)."""
    return f"{np.isin(np.arange(len(best)) * len(best) + best, i * len(best) + j).mean():.1%}"


def best_demonstrations(others: np.ndarray, examples: list[Example]) -> None:
    """Print what each target's highest-utility demonstration is (by kind, where the pool's rows
    carry the testbed's `kind` / `is_wrong` / `is_off_task` labels)."""
    rows = [e.record for e in examples]
    best = others.argmax(axis=1)
    top, count = np.unique(best, return_counts=True)
    hub = examples[int(top[count.argmax()])]
    print(
        f"{len(top)} distinct rows are some target's best demonstration (j != i), the most "
        f"frequent for {count.max()} targets: {hub.x!r} / {hub.y!r}."
    )
    if all("kind" in r for r in rows):
        kinds = np.array([str(r["kind"]) for r in rows])
        own = np.mean(kinds[best] == kinds)
        print(f"A target's best demonstration is of its own kind for {own:.1%} of targets.")
    if all("is_wrong" in r and "is_off_task" in r for r in rows):
        noisy = np.array([bool(r["is_wrong"] or r["is_off_task"]) for r in rows])
        print(
            f"It is a wrong or off-task row for {noisy[best].mean():.1%} of targets (those are "
            f"{noisy.mean():.1%} of the pool)."
        )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--budget", type=float, default=0.3)
    p.add_argument("--actors", type=int, default=2)
    p.add_argument("--out", default=".cache/bench-knn")
    p.add_argument("--randoms", type=int, default=10)
    p.add_argument("--pool", help="a pool file to use instead of the synthetic one (--n ignored)")
    p.add_argument("--model", help="a model to use instead of the demo-size one trained here")
    p.add_argument("--sweep-budgets", default="0.01,0.03,0.1,0.3")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pool = Path(args.pool) if args.pool else out / f"pool-{args.n}.jsonl"
    if not pool.exists():
        make_pool(args.n, pool)
    model = args.model or ensure_demo_model(out / "model", pool)
    base = [
        f"data.path={pool}",
        f"model.path={model}",
        f"store.uri={out / 'store'}",
        f"budget={args.budget}",
        f"scoring.actors={args.actors}",
        "scoring.demos_per_block=64",
    ]
    start = time.perf_counter()
    dense_ids, dense_m = select(base, "pairs.mode=dense", f"output_dir={out / 'dense'}")
    dense_s = time.perf_counter() - start
    utilities = out / "dense" / "utilities.parquet"
    ids = pq.read_table(utilities)["target_id"].unique().to_pylist()
    half = args.k // 2
    variants = {
        f"knn k={args.k}": [f"pairs.k={args.k}"],
        f"knn k={half} + random {args.k - half}": [f"pairs.k={half}", f"pairs.random_k={half}"],
    }
    picks, needed = {}, {}
    for name, keys in variants.items():
        for scaling in ("minmax", "clip"):
            run = f"{name}-{scaling}".replace(" ", "").replace("=", "").replace("+", "_")
            chosen, m = select(
                base,
                "pairs.mode=knn",
                *keys,
                f"selection.scaling={scaling}",
                f"output_dir={out / run}",
            )
            picks[(name, scaling)] = [ids.index(x) for x in chosen]
            needed[name] = m["kernel"]["pairs_needed"]
    u = dense_utilities(utilities, ids)
    rows = []
    for judged in ("minmax", "clip"):
        f = facility_location(scale_utilities(u.ravel(), judged).reshape(u.shape))
        budget = len(dense_ids)
        best = lazy_greedy(f, budget).value
        rng = np.random.default_rng(0)
        f_rand = float(
            np.mean([f.evaluate(rng.permutation(len(ids))[:budget]) for _ in range(args.randoms)])
        )
        for (name, scaling), sel in picks.items():
            value = f.evaluate(sel)
            rows.append(
                {
                    "judged_on": f"dense {judged}",
                    "pairs": name,
                    "scaling": scaling,
                    "f_dense": best,
                    "f_sparse": value,
                    "f_random": f_rand,
                    "relative_gain": (value - f_rand) / (best - f_rand),
                    "pairs_needed": needed[name],
                }
            )
    dense_pairs = dense_m["kernel"]["pairs_needed"]
    print(f"n={len(ids)} k={args.k} budget={args.budget} ({len(dense_ids)} picks)")
    print(
        f"dense: {dense_pairs:,} pairs; this run scored {dense_m['kernel']['pairs_scored']:,} "
        f"in {dense_s:.0f} s (the rest came from the block store)"
    )
    print(
        "\n| judged on | sparse pairs | scaling | pairs / dense pairs | f(dense) | f(sparse) "
        "| f(random) | (f(sparse)-f(rand)) / (f(dense)-f(rand)) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['judged_on']} | {r['pairs']} | {r['scaling']} "
            f"| {r['pairs_needed'] / dense_pairs:.2%} | {r['f_dense']:.2f} | {r['f_sparse']:.2f} "
            f"| {r['f_random']:.2f} | {r['relative_gain']:.3f} |"
        )
    budgets = [float(b) for b in args.sweep_budgets.split(",")]
    by_id = {e.id: e for e in read_examples(DataConfig(path=str(pool))).examples}
    examples = [by_id[x] for x in ids]  # u's order
    others = without_self(u)
    sweep(u, others, strategies(others, examples, str(model), args.k), budgets, args.randoms)
    best_demonstrations(others, examples)
    print(f"\ncommand: {' '.join([Path(sys.executable).name, *sys.argv])}")
    (out / "knn_vs_dense.json").write_text(json.dumps({"rows": rows, "dense_s": dense_s}, indent=2))


if __name__ == "__main__":
    main()
