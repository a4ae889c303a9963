"""The `delift-ray` command line: wires config to the pipeline and prints a summary; no compute.

Results (summaries, tables) go to stdout; status lines, warnings and progress bars to stderr.
Exit codes: 0 done, 1 the run failed (data, model, store, Ray, outputs: one line), 2 a usage or
config error (argparse's, or "config: ..."), 130 interrupted; any other error keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from delift_ray import logs
from delift_ray.errors import DeliftError
from delift_ray.models.offline import use_offline_hub

if TYPE_CHECKING:
    from delift_ray.config import Config
    from delift_ray.workflows.outputs import RunOutputs

use_offline_hub()
log = logging.getLogger(__name__)

INTERRUPTED = 130  # 128 + SIGINT, as shells report it
CONFIG_COMMANDS = ("select", "train", "eval", "compare", "refresh")  # config/run.py's commands


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `delift-ray` console script; returns the exit code."""
    args = _parser().parse_args(argv)
    logs.configure(args.verbosity)
    try:
        return int(args.func(args) or 0)
    except DeliftError as e:
        print(f"delift-ray: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("delift-ray: interrupted", file=sys.stderr)
        return INTERRUPTED


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="delift-ray", description=__doc__)
    p.add_argument("--version", action="version", version=f"delift-ray {_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    common = _common_args()

    def command(name: str, about: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=about, parents=[common])

    sel = command("select", "select a subset of the pool (one run per config)")
    _add_config_args(sel)
    sel.add_argument(
        "--dry-run", action="store_true", help="print the plan and cost estimate, then exit"
    )
    sel.set_defaults(func=_select)

    tr = command("train", "fine-tune the model on a subset with Ray Train")
    _add_config_args(tr)
    tr.set_defaults(func=_train)

    ev = command("eval", "evaluate a model on the held-out test set")
    _add_config_args(ev)
    ev.set_defaults(func=_eval)

    cmp = command(
        "compare", "select with each method, fine-tune and evaluate each subset; tabulate"
    )
    _add_config_args(cmp)
    cmp.set_defaults(func=_compare)

    ref = command("refresh", "select again after the pool grew; only new pairs scored")
    _add_config_args(ref)
    ref.set_defaults(func=_refresh)

    show = command("config", "print the resolved, validated config as YAML (what a run uses)")
    _add_config_args(show)
    show.add_argument(
        "--for",
        dest="for_command",
        choices=CONFIG_COMMANDS,
        help="validate only the sections this command uses (default: every section)",
    )
    show.set_defaults(func=_show_config)

    demo = command("demo-model", "build the tiny demo model (cached)")
    demo.add_argument("--out", default=".cache/demo-model", help="model directory to write")
    demo.add_argument("--data", default="pipelines/data/demo_pool.jsonl", help="training pool")
    demo.set_defaults(func=_demo_model)
    return p


def _common_args() -> argparse.ArgumentParser:
    """-v / -q, shared by every subcommand."""
    p = argparse.ArgumentParser(add_help=False)
    level = p.add_mutually_exclusive_group()
    level.add_argument(
        "-v",
        "--verbose",
        dest="verbosity",
        action="store_const",
        const=logs.VERBOSE,
        default=logs.NORMAL,
        help="debug messages; Ray's and transformers' info messages too",
    )
    level.add_argument(
        "-q",
        "--quiet",
        dest="verbosity",
        action="store_const",
        const=logs.QUIET,
        help="only warnings and errors on stderr, no progress bars (results still on stdout)",
    )
    return p


def _version() -> str:
    """The installed delift-ray's version."""
    from importlib import metadata

    try:
        return metadata.version("delift-ray")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


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


def _load(args: argparse.Namespace, command: str | None) -> Config:
    """The config of args (--config, --set), the sections `command` uses validated."""
    from delift_ray.config import load_config

    cfg = load_config(args.config, args.overrides, command)
    checked = f"the sections {command} uses" if command else "every section"
    log.debug("config %s with %d --set: %s valid", args.config, len(args.overrides), checked)
    return cfg


def _show_config(args: argparse.Namespace) -> int:
    from delift_ray.config import config_to_dict

    print(_yaml(config_to_dict(_load(args, args.for_command))), end="")
    return 0


def _yaml(data: dict[str, Any]) -> str:
    """`data` as block YAML in its own key order, multi-line strings (templates) as `|` blocks."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        style = "|" if "\n" in value else None  # the emitter quotes it where a block cannot hold it
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    return yaml.dump(data, Dumper=Dumper, sort_keys=False, allow_unicode=True)


def _select(args: argparse.Namespace) -> int:
    cfg = _load(args, args.command)  # before the heavy imports: a bad config fails fast
    from delift_ray.workflows.select import run_select

    result = run_select(cfg, dry_run=args.dry_run)
    if result is not None:
        print("\n".join(_select_summary(result)))
    return 0


def _refresh(args: argparse.Namespace) -> int:
    cfg = _load(args, args.command)  # before the heavy imports: a bad config fails fast
    from delift_ray.workflows.refresh import run_refresh

    result = run_refresh(cfg)
    print("\n".join(_select_summary(result)))
    return 0


def _train(args: argparse.Namespace) -> int:
    cfg = _load(args, args.command)  # before the heavy imports: a bad config fails fast
    from delift_ray import storage
    from delift_ray.finetune.driver import run_train

    result = run_train(cfg)
    m = result.manifest
    losses = " -> ".join(f"{x:.4f}" for x in m["losses"])
    print(
        f"trained on {m['rows']} rows ({m['too_long']} too long) x {m['epochs']} epochs, "
        f"{cfg.train.method}, {m['workers']} workers: {m['training_tokens']} tokens "
        f"in {m['wall_s']:.1f} s"
    )
    print(f"epoch loss {losses}")
    shown = storage.display(result.manifest_path)
    print(f"model in {storage.display(result.model_dir)}/, manifest {shown}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    cfg = _load(args, args.command)  # before the heavy imports: a bad config fails fast
    from delift_ray import storage
    from delift_ray.finetune.evaluate import run_eval

    result = run_eval(cfg)
    metrics = result.summary["metrics"]
    shown = ", ".join(
        f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float) and k != "loss_rows"
    )
    print(f"evaluated {result.summary['model_path']} on {result.summary['rows']} rows: {shown}")
    rows, summary = storage.display(result.rows_path), storage.display(result.summary_path)
    print(f"rows in {rows}, summary {summary}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    cfg = _load(args, args.command)  # before the heavy imports: a bad config fails fast
    from delift_ray.workflows.compare import run_compare, summary_lines

    result = run_compare(cfg)
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
    from delift_ray import storage

    lines.append(f"outputs in {storage.display(result.directory)}/:")
    lines += [f"  {storage.name(p)}" for p in result.files.values()]
    return lines


if __name__ == "__main__":
    sys.exit(main())
