"""Choose the testbed's fine-tuning recipe per budget, by the rule fixed in benchmarks/TESTBED.md.

Fair by construction: it looks only at random subsets (so it favours no selection method) and
at the validation set (never the test set). For each candidate (epochs, lr), a `compare` of
`random` at every budget (`draws` seeded draws, draw k trained with seed k) and of `full` (the
whole pool, budget 1.0, `draws` training seeds), evaluated on the validation set; per budget
the candidate with the best mean validation exact match is the recipe (ties: the earlier one,
the cheaper, as candidates are listed in order of cost). Writes `recipe.json` under --out and
prints the `compare.epochs_by_budget` and `compare.lr_by_budget` values (last two lines, for
benchmarks/testbed.sh).

    python -m delift_ray.testbed.recipe --config pipelines/configs/testbed.yaml \
        --set model.path=<model> --set data.path=<pool> --validation <validation.jsonl> \
        --out runs/testbed/recipe --candidates 5@0.001,20@0.001,5@0.003,20@0.003
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from delift_ray.config import load_config
from delift_ray.errors import DeliftError
from delift_ray.files import atomic_write_bytes
from delift_ray.workflows.compare import run_compare

Candidate = tuple[int, float]  # (epochs, lr)


def parse_candidates(text: str) -> list[Candidate]:
    """`epochs@lr` items ("5@0.001,20@0.003") in order; ValueError if malformed."""
    out = []
    for item in text.split(","):
        epochs, sep, lr = item.strip().partition("@")
        if not sep or int(epochs) < 1 or float(lr) <= 0:
            raise ValueError(f"a candidate is epochs@lr with epochs >= 1 and lr > 0: {item!r}")
        out.append((int(epochs), float(lr)))
    if len(set(out)) < len(out):
        raise ValueError(f"a candidate is listed twice: {text!r}")
    return out


def choose(scores: dict[Candidate, float], order: Sequence[Candidate]) -> Candidate:
    """The candidate with the best score; ties go to the one listed first."""
    if not scores:
        raise DeliftError("recipe: no candidate was tried")
    return max((c for c in order if c in scores), key=lambda c: (scores[c], -order.index(c)))


def validation_scores(
    config: str, overrides: list[str], candidate: Candidate, draws: int, out: Path
) -> dict[float, float]:
    """Mean validation exact match per budget of random subsets trained with `candidate`."""
    epochs, lr = candidate
    fixed = [
        "compare.methods=random,full",
        f"compare.random_subsets={draws}",
        f"compare.seeds={draws}",
        "compare.draw_seeds=one",
        "compare.epochs_by_budget=",
        "compare.lr_by_budget=",
        f"train.epochs={epochs}",
        f"train.lr={lr}",
        f"output_dir={out / f'epochs{epochs}-lr{lr:g}'}",
    ]
    cfg = load_config(config, [*overrides, *fixed])
    by_budget: dict[float, list[float]] = {}
    for run in run_compare(cfg).runs:
        by_budget.setdefault(float(run["budget"]), []).append(float(run["exact_match"]))
    return {b: float(np.mean(v)) for b, v in by_budget.items()}


def run_rule(
    config: str,
    overrides: list[str],
    candidates: list[Candidate],
    draws: int,
    validation: str,
    out: Path,
) -> dict[float, Candidate]:
    """Score every candidate on the validation set; record and return each budget's pick."""
    evals = [*overrides, f"eval.test.path={validation}"]
    scores: dict[float, dict[Candidate, float]] = {}
    for cand in candidates:
        for budget, em in validation_scores(config, evals, cand, draws, out).items():
            scores.setdefault(budget, {})[cand] = em
            print(
                f"[recipe] budget {budget}: {cand[0]} epochs, lr {cand[1]:g}: {em:.4f}",
                file=sys.stderr,
            )
    chosen = {b: choose(s, candidates) for b, s in sorted(scores.items())}
    record = {
        "rule": "per budget, max mean validation exact match of random subsets; ties: first",
        "validation": validation,
        "draws": draws,
        "candidates": [list(c) for c in candidates],
        "scores": {
            str(b): {f"{e}@{lr:g}": v for (e, lr), v in s.items()} for b, s in scores.items()
        },
        "chosen": {str(b): {"epochs": c[0], "lr": c[1]} for b, c in chosen.items()},
    }
    atomic_write_bytes(out / "recipe.json", (json.dumps(record, indent=1) + "\n").encode())
    return chosen


def compare_settings(chosen: dict[float, Candidate]) -> tuple[str, str]:
    """compare.epochs_by_budget and compare.lr_by_budget for the chosen recipes."""
    epochs = ",".join(f"{b}={c[0]}" for b, c in chosen.items())
    return epochs, ",".join(f"{b}={c[1]:g}" for b, c in chosen.items())


def main(argv: list[str] | None = None) -> None:
    """Command line: apply the recipe rule; print epochs_by_budget and lr_by_budget (last)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--validation", required=True, help="the validation set's file")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument(
        "--candidates",
        default="5@0.001,20@0.001,5@0.003,20@0.003",
        help="epochs@lr, in order of cost (ties go to the first)",
    )
    parser.add_argument("--draws", type=int, default=3, help="random subsets per budget")
    args = parser.parse_args(argv)
    try:
        candidates = parse_candidates(args.candidates)
    except ValueError as e:
        parser.error(f"--candidates: {e}")
    if args.draws < 1:
        parser.error("--draws must be >= 1")
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        chosen = run_rule(
            args.config, args.overrides, candidates, args.draws, args.validation, args.out
        )
    except DeliftError as e:
        sys.exit(f"error: {e}")
    for line in compare_settings(chosen):
        print(line)


if __name__ == "__main__":
    main()
