"""The `delift-ray` command line: wires config to the pipeline and prints a summary; no compute."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from delift_ray.errors import DeliftError
from delift_ray.models.offline import use_offline_hub

if TYPE_CHECKING:
    from delift_ray.workflows.outputs import RunOutputs

use_offline_hub()


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

    tr = sub.add_parser("train", help="fine-tune the model on a subset with Ray Train")
    _add_config_args(tr)
    tr.set_defaults(func=_train)

    ev = sub.add_parser("eval", help="evaluate a model on the held-out test set")
    _add_config_args(ev)
    ev.set_defaults(func=_eval)

    cmp = sub.add_parser(
        "compare", help="select with each method, fine-tune and evaluate each subset; tabulate"
    )
    _add_config_args(cmp)
    cmp.set_defaults(func=_compare)

    ref = sub.add_parser("refresh", help="select again after the pool grew; only new pairs scored")
    _add_config_args(ref)
    ref.set_defaults(func=_refresh)

    demo = sub.add_parser("demo-model", help="build the tiny demo model (cached)")
    demo.add_argument("--out", default=".cache/demo-model", help="model directory to write")
    demo.add_argument("--data", default="pipelines/data/demo_pool.jsonl", help="training pool")
    demo.set_defaults(func=_demo_model)
    return p


def job_main(command: str) -> Callable[[Sequence[str] | None], int]:
    """The `ray job submit` entry point of one subcommand: main(argv) = `delift-ray <command> argv`
    (argv defaults to sys.argv[1:]); returns the exit code."""

    def run(argv: Sequence[str] | None = None) -> int:
        return main([command, *(sys.argv[1:] if argv is None else argv)])

    return run


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
    from delift_ray.workflows.select import run_select

    cfg = load_config(args.config, args.overrides, args.command)
    result = run_select(cfg, dry_run=args.dry_run)
    if result is not None:
        print("\n".join(_select_summary(result)))
    return 0


def _refresh(args: argparse.Namespace) -> int:
    from delift_ray.config import load_config
    from delift_ray.workflows.refresh import run_refresh

    result = run_refresh(load_config(args.config, args.overrides, args.command))
    print("\n".join(_select_summary(result)))
    return 0


def _train(args: argparse.Namespace) -> int:
    from delift_ray.config import load_config
    from delift_ray.finetune.driver import run_train

    cfg = load_config(args.config, args.overrides, args.command)
    m = run_train(cfg).manifest
    losses = " -> ".join(f"{x:.4f}" for x in m["losses"])
    print(
        f"trained on {m['rows']} rows ({m['too_long']} too long) x {m['epochs']} epochs, "
        f"{cfg.train.method}, {m['workers']} workers: {m['training_tokens']} tokens "
        f"in {m['wall_s']:.1f} s"
    )
    print(f"epoch loss {losses}")
    print(f"model in {m['output_model']}/, manifest {cfg.output_dir}/train_manifest.json")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from delift_ray.config import load_config
    from delift_ray.finetune.evaluate import run_eval

    cfg = load_config(args.config, args.overrides, args.command)
    result = run_eval(cfg)
    metrics = result.summary["metrics"]
    shown = ", ".join(
        f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float) and k != "loss_rows"
    )
    print(f"evaluated {result.summary['model_path']} on {result.summary['rows']} rows: {shown}")
    print(f"rows in {result.rows_path}, summary {result.summary_path}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from delift_ray.config import load_config
    from delift_ray.workflows.compare import run_compare, summary_lines

    result = run_compare(load_config(args.config, args.overrides, args.command))
    print("\n".join(summary_lines(result)))
    return 0


def _demo_model(args: argparse.Namespace) -> int:
    from delift_ray.models.demo_model import ensure_demo_model

    path = ensure_demo_model(args.out, args.data)
    print(f"demo model ready: {path}")
    return 0


def _select_summary(result: RunOutputs) -> list[str]:
    """A short summary of what was selected, how good it is, and where the files are."""
    m = result.manifest
    pool = m["counts"]["pool"]
    lines = [
        f"selected {m['selected']} of {m['pool_size']} examples "
        f"({m['selected'] / max(m['pool_size'], 1):.0%}) with method={m['method']} "
        f"stage={m['stage']}"
        + (
            f" ({m['objective_function']}, {m['optimizer']} greedy)"
            if m["objective_function"]
            else ""
        ),
        f"rows read {pool['rows_read']}: usable {pool['usable']}, rejected {pool['rejected']}, "
        f"exact duplicates {pool['duplicates']}",
    ]
    if m["objective"] is not None:
        ratio = f", {m['bound_ratio']:.1%} of the bound" if m["bound_ratio"] else ""
        bound = m["upper_bound"]
        lines.append(
            f"objective {m['objective']:.4f}; upper bound on the optimum {bound:.4f}{ratio}"
        )
    if m["kernel"] and "pairs_scored" in m["kernel"]:
        lines.append(f"pairs scored {m['kernel']['pairs_scored']:,}")
    total = sum(m["timings_s"].values())
    phases = ", ".join(f"{k} {v:.1f}s" for k, v in m["timings_s"].items())
    lines.append(f"time {total:.1f}s ({phases})")
    lines.append(f"outputs in {result.directory}/:")
    lines += [f"  {p.name}" for p in result.files.values()]
    return lines


if __name__ == "__main__":
    sys.exit(main())
