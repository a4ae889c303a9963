"""Choose the testbed's fine-tuning recipe by the rule fixed in benchmarks/TESTBED.md.

Looks at the full pool only, never at a subset: for each candidate epoch count in order,
fine-tune on the whole pool (method `full`, one seed) and evaluate on the test set; the first
whose exact match reaches the threshold is the recipe, else the one with the best exact match.
Writes `recipe.json` under --out and prints the chosen epoch count last (for
benchmarks/testbed.sh).

    python -m delift_ray.testbed.recipe --config pipelines/configs/testbed.yaml \
        --set model.path=<model> --out runs/testbed/recipe --epochs 3,10,20 --threshold 0.3
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from delift_ray.config import load_config
from delift_ray.errors import DeliftError
from delift_ray.files import atomic_write_bytes
from delift_ray.workflows.compare import run_compare


def choose(tried: list[tuple[int, float]], threshold: float) -> int:
    """The first epoch count whose exact match reaches threshold, else the best (first of ties)."""
    if not tried:
        raise DeliftError("recipe: no candidate was tried")
    for epochs, exact_match in tried:
        if exact_match >= threshold:
            return epochs
    return max(tried, key=lambda t: t[1])[0]


def full_pool_exact_match(config: str, overrides: list[str], epochs: int, out: Path) -> float:
    """Exact match on the test set after fine-tuning on the whole pool for `epochs` (one seed)."""
    fixed = ["compare.methods=full", "compare.seeds=1", f"train.epochs={epochs}"]
    cfg = load_config(config, [*overrides, *fixed, f"output_dir={out / f'epochs-{epochs}'}"])
    (row,) = run_compare(cfg).table
    return float(row["exact_match"])


def run_rule(
    config: str, overrides: list[str], candidates: list[int], threshold: float, out: Path
) -> int:
    """Try the candidates in order until one reaches the threshold; record and return the pick."""
    tried: list[tuple[int, float]] = []
    for epochs in candidates:
        tried.append((epochs, full_pool_exact_match(config, overrides, epochs, out)))
        print(f"[recipe] {epochs} epochs: exact match {tried[-1][1]:.4f}", file=sys.stderr)
        if tried[-1][1] >= threshold:
            break
    chosen = choose(tried, threshold)
    record = {"threshold": threshold, "candidates": candidates, "tried": tried, "epochs": chosen}
    atomic_write_bytes(out / "recipe.json", (json.dumps(record, indent=1) + "\n").encode())
    return chosen


def main(argv: list[str] | None = None) -> None:
    """Command line: apply the recipe rule; print the chosen epoch count (last line)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--epochs", default="3,10,20", help="candidates, tried in this order")
    parser.add_argument("--threshold", type=float, default=0.3)
    args = parser.parse_args(argv)
    try:
        candidates = [int(e) for e in args.epochs.split(",")]
    except ValueError:
        parser.error(f"--epochs must be integers separated by commas, not {args.epochs!r}")
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        print(run_rule(args.config, args.overrides, candidates, args.threshold, args.out))
    except DeliftError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
