"""The small testbed behind README command 1: a few kinds, a small base model, a small pool.

`scripts/demo.sh` builds it (cached: about two minutes the first time), then compares random, se,
delift and full data on it with pipelines/configs/demo.yaml: select, fine-tune, evaluate, print
the table. The base model follows the accepted testbed recipe (`packed-long`,
benchmarks/TESTBED.md) with fewer steps on four kinds; the full testbed is the benchmark
(benchmarks/testbed.sh).

    python -m delift_ray.testbed.demo --models .cache/testbed --out runs/demo-testbed
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from delift_ray.testbed import generate, pretrain
from delift_ray.testbed.generate import PoolSpec

# four kinds of one input form: only an example (or an instruction) says which is wanted
KINDS = ("uppercase", "first_letter", "count_letters", "repeat")
SETTINGS = replace(pretrain.SCALES["packed-long"], hidden=64, steps=900, kinds=KINDS)
POOL = PoolSpec(n=400, kinds=KINDS, test_per_kind=50, seed=0)


def build(models: str | Path, out: str | Path) -> tuple[Path, dict[str, Path]]:
    """(base model directory, pool/test/spec paths) of the demo testbed, built unless cached."""
    model = pretrain.pretrain(models, SETTINGS, log=_log)
    return model, generate.write(POOL, out)


def _log(message: str) -> None:
    print(f"[demo] pretraining {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    """Command line: build the demo testbed; print the model directory (last line)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=".cache/testbed")
    parser.add_argument("--out", default="runs/demo-testbed")
    args = parser.parse_args(argv)
    model, paths = build(args.models, args.out)
    for name, path in paths.items():
        print(f"{name}: {path}", file=sys.stderr)
    print(model)


if __name__ == "__main__":
    main()
