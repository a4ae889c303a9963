"""The `delift-ray` command line: wires config to the pipeline and prints a summary; no compute."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from delift_ray.errors import DeliftError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `delift-ray` console script."""
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DeliftError as e:
        print(f"delift-ray: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("delift-ray: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="delift-ray", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    sel = sub.add_parser("select", help="select a subset of the pool (one run per config)")
    _add_config_args(sel)
    sel.add_argument(
        "--dry-run", action="store_true", help="print the plan and cost estimate, then exit"
    )
    sel.set_defaults(func=_select)

    demo = sub.add_parser("demo-model", help="build the tiny demo model (cached)")
    demo.add_argument("--out", default=".cache/demo-model", help="model directory to write")
    demo.add_argument("--data", default="pipelines/data/demo_pool.jsonl", help="training pool")
    demo.set_defaults(func=_demo_model)
    return p


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="YAML config file")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set budget=0.3 --set data.path=pool.jsonl",
    )


def _select(args: argparse.Namespace) -> int:
    from delift_ray.config import load_config
    from delift_ray.pipeline import run_select
    from delift_ray.report import summary_lines

    cfg = load_config(args.config, args.overrides)
    result = run_select(cfg, dry_run=args.dry_run)
    if result is not None:
        print("\n".join(summary_lines(result)))
    return 0


def _demo_model(args: argparse.Namespace) -> int:
    from delift_ray.demo import ensure_demo_model

    path = ensure_demo_model(args.out, args.data)
    print(f"demo model ready: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
