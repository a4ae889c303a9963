"""Compare selection methods: select with each, fine-tune on each subset, evaluate, tabulate.

Every selection ("arm") gets a directory under output_dir, with one per training seed inside:

    <method>[@<pairs>]-b<budget>[-r<draw>]/select/   run_select's outputs (full: full/select/)
    <arm>/seed<seed>/                      run_train's (model/, train/, train_manifest.json)
    <arm>/seed<seed>/eval/                 run_eval's (eval.json, eval_rows.parquet)
    store/                                 the block store all delift selections share

`compare.pair_modes` with several modes (e.g. "knn,dense") runs every method that scores
utilities once per mode, labelled `<method>@<mode>` in the tables and directories; the store
keys pairs by ids and not by mode, so dense scores only the pairs kNN did not (and kNN after
dense scores nothing). One listed mode replaces pairs.mode for those methods.
    runs.csv                               one row per (arm, seed)
    comparison.csv, comparison.md          one row per method and budget
    metrics.png, gain_curve.png, composition.png

A sub-run whose final file (manifest.json, train_manifest.json, eval.json) records the config it
would run with is reused as it is; config sections a stage does not read are ignored for that.
A method's numbers are means over its runs (random, quota: draws x seeds); `<metric>_std` is the
sample standard deviation (n - 1), empty for a single run. Wall time is selection + training +
evaluation of one run, as recorded when each sub-run ran.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from delift_ray import storage
from delift_ray.commit import committed_dir
from delift_ray.config import (
    CompareConfig,
    Config,
    Method,
    StoreConfig,
    config_to_dict,
    store_uri,
)
from delift_ray.distributed.session import run_scope
from delift_ray.errors import ConfigError
from delift_ray.files import prepare_output_dir, write_text
from delift_ray.finetune.driver import output_model_path, run_train
from delift_ray.finetune.evaluate import run_eval
from delift_ray.models.load import load_chat_template
from delift_ray.selection.methods import METHODS
from delift_ray.workflows.compare_plots import draw_plots
from delift_ray.workflows.compare_tables import (
    METRICS,
    RUN_COLUMNS,
    TABLE_COLUMNS,
    markdown,
    markdown_table,
    summarize,
    write_csv,
)
from delift_ray.workflows.select import run_select

log = logging.getLogger(__name__)

FINAL = {"select": "manifest.json", "train": "train_manifest.json", "eval": "eval.json"}
UNUSED = {"select": ("train", "eval"), "train": ("eval",), "eval": ()}


@dataclass(frozen=True)
class Arm:
    """One selection to compare: a method at a budget (random: one seeded draw), with its pair
    mode when the comparison lists several (None: the one mode)."""

    method: Method
    budget: int | float
    draw: int | None = None
    pair_mode: str | None = None

    @classmethod
    def of_label(cls, label: str, budget: int | float, draw: int | None = None) -> Arm:
        """The arm a table's method label (`delift`, `delift@dense`) names."""
        method, _, mode = label.partition("@")
        return cls(method, budget, draw, mode or None)

    @property
    def label(self) -> str:
        """The method as the tables show it: `<method>@<pair mode>` when modes are compared."""
        return self.method if self.pair_mode is None else f"{self.method}@{self.pair_mode}"

    @property
    def whole_pool(self) -> bool:
        """Whether the method takes every row (full), whatever the budget."""
        return METHODS[self.method].whole_pool

    @property
    def name(self) -> str:
        """Its directory under output_dir."""
        if self.whole_pool:
            return self.method
        draw = "" if self.draw is None else f"-r{self.draw}"
        return f"{self.label}-b{self.budget}{draw}"


@dataclass
class CompareResult:
    """What a comparison wrote, its per-run and per-method rows, and how much work it did."""

    directory: str
    files: dict[str, str]
    runs: list[dict[str, Any]]
    table: list[dict[str, Any]]
    markdown_table: list[str]
    ran: Counter[str]
    sub_runs: int
    wall_s: float


# ---------------------------------------------------------------------------------------------
# the plan and each sub-run's config


def plan(cfg: Config) -> list[Arm]:
    """The comparison's selections: every method at every budget (full data once), methods that
    score utilities once per listed pair mode when several are listed."""
    c = cfg.compare
    listed = c.pair_mode_list()
    several: list[str | None] = list(listed) if len(listed) > 1 else [None]
    arms = []
    for method in c.method_list():
        if METHODS[method].whole_pool:
            arms.append(Arm(method, 1.0))
            continue
        drawn = METHODS[method].seeded_draw
        draws = [cfg.seed + k for k in range(c.random_subsets)] if drawn else [None]
        modes = several if METHODS[method].needs == "utilities" else [None]
        arms += [
            Arm(method, b, d, m) for m in modes for b in c.budget_list(cfg.budget) for d in draws
        ]
    return arms


def pair_mode(cfg: Config, arm: Arm) -> Literal["dense", "knn"]:
    """The pair mode an arm's selection runs with: its own, the one listed, or pairs.mode."""
    listed = cfg.compare.pair_mode_list()
    mode = arm.pair_mode or (listed[0] if listed else cfg.pairs.mode)
    return cast(Literal["dense", "knn"], mode)


def arm_seeds(cfg: Config, arm: Arm, seeds: list[int]) -> list[int]:
    """The training seeds of an arm: all of them, or (draw_seeds: one) its draw's turn."""
    if arm.draw is None or cfg.compare.draw_seeds == "all":
        return seeds
    return [seeds[(arm.draw - cfg.seed) % len(seeds)]]


def select_config(cfg: Config, arm: Arm) -> Config:
    """The selection run of `arm` in <arm>/select, with the comparison's shared block store, its
    pair mode and its method's selection preset applied (the manifest records what it ran)."""
    method = METHODS[arm.method]
    return dataclasses.replace(
        cfg,
        method=arm.method,
        pairs=dataclasses.replace(cfg.pairs, mode=pair_mode(cfg, arm)),
        selection=cfg.selection.resolved(method.preset),
        budget=arm.budget,
        seed=cfg.seed if arm.draw is None else arm.draw,
        output_dir=storage.join(cfg.output_dir, arm.name, "select"),
        store=StoreConfig(uri=store_uri(cfg)),
        compare=CompareConfig(),
    )


def train_config(select: Config, seed: int, recipe: dict[str, Any] | None = None) -> Config:
    """Fine-tuning on a selection's subset with training seed `seed` and the train settings of
    its budget's recipe (CompareConfig.recipe), in <arm>/seed<seed>."""
    train = dataclasses.replace(
        select.train, subset=select.output_dir, seed=seed, output_model="", **(recipe or {})
    )
    out = storage.join(storage.parent(select.output_dir), f"seed{seed}")
    return dataclasses.replace(select, output_dir=out, train=train)


def eval_config(train: Config) -> Config:
    """Evaluation of a fine-tuning run's model, in <arm>/seed<seed>/eval."""
    model = output_model_path(train.train, train.output_dir)
    return dataclasses.replace(
        train,
        output_dir=storage.join(train.output_dir, "eval"),
        eval=dataclasses.replace(train.eval, model_path=model),
    )


def absolute_paths(cfg: Config) -> Config:
    """cfg with model.path and output_dir absolute: Ray Train workers run in a directory of their
    own, where a relative path would name nothing."""
    model = dataclasses.replace(cfg.model, path=_absolute(cfg.model.path))
    return dataclasses.replace(cfg, model=model, output_dir=_absolute(cfg.output_dir))


def _absolute(path: str) -> str:
    return path if storage.is_uri(path) else str(Path(path).absolute())


def reusable(cfg: Config, stage: str) -> dict[str, Any] | None:
    """The stage's final record in cfg.output_dir if it was written with this config, else None.

    Sections the stage does not read are ignored; a key the record lacks (added to the config
    since) counts as its default, a key it has that the config lost is ignored.
    """
    try:
        record = final_record(cfg, stage)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        return None
    recorded = _with_defaults(record["config"], _as_json(Config()))
    current = _as_json(cfg)
    same = all(recorded[k] == v for k, v in current.items() if k not in UNUSED[stage])
    return record if same else None


def _as_json(cfg: Config) -> dict[str, Any]:
    return json.loads(json.dumps(config_to_dict(cfg), default=str))


def _with_defaults(recorded: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """`defaults`' keys, with the recorded value wherever there is one (nested sections too)."""
    return {
        k: _with_defaults(recorded[k], d)
        if isinstance(d, dict) and isinstance(recorded.get(k), dict)
        else recorded.get(k, d)
        for k, d in defaults.items()
    }


# ---------------------------------------------------------------------------------------------
# the run


def run_compare(cfg: Config) -> CompareResult:
    """Select, fine-tune and evaluate every arm x seed (reusing finished sub-runs); write tables."""
    started = time.perf_counter()
    if not cfg.model.path:
        raise ConfigError("config: compare needs model.path (the model to fine-tune)")
    if cfg.eval.test is None:
        raise ConfigError("config: compare needs eval.test.path (the held-out test set)")
    cfg = absolute_paths(cfg)
    root = prepare_output_dir(cfg.output_dir)
    arms, seeds = plan(cfg), cfg.compare.seed_list(cfg.train.seed)
    runs_of = {arm: arm_seeds(cfg, arm, seeds) for arm in arms}
    ran: Counter[str] = Counter()
    runs = []
    with run_scope():  # one Ray session for every sub-run, started when one first needs it
        for arm in arms:
            sel_cfg = select_config(cfg, arm)
            sel, new_subset = _stage("select", sel_cfg, run_select, ran, False)
            for seed in runs_of[arm]:
                tr_cfg = train_config(sel_cfg, seed, cfg.compare.recipe(arm.budget))
                tr, new_model = _stage("train", tr_cfg, run_train, ran, new_subset)
                ev, _ = _stage("eval", eval_config(tr_cfg), run_eval, ran, new_model)
                runs.append(run_row(arm, seed, sel, tr, ev))
    table = summarize(runs)
    labels = arm_labels(arms)
    files = {
        "runs": write_csv(runs, RUN_COLUMNS, storage.join(root, "runs.csv")),
        "comparison": write_csv(table, TABLE_COLUMNS, storage.join(root, "comparison.csv")),
        **draw_plots(
            cfg.data,
            selection_files(cfg, arms),
            table,
            labels,
            root,
            load_chat_template(cfg.model, [cfg.data]),
        ),
    }
    lines = markdown_table(table, labels)
    text = markdown(cfg, lines, seeds, files)
    files["markdown"] = write_text(text, storage.join(root, "comparison.md"))
    return CompareResult(
        directory=root,
        files=files,
        runs=runs,
        table=table,
        markdown_table=lines,
        ran=ran,
        sub_runs=sum(1 + 2 * len(s) for s in runs_of.values()),
        wall_s=round(time.perf_counter() - started, 3),
    )


def _stage(
    stage: str,
    cfg: Config,
    run: Callable[[Config], object],
    ran: Counter[str],
    upstream_ran: bool,
) -> tuple[dict[str, Any], bool]:
    """(the stage's final record, whether it ran): reused if it matches cfg and its input was
    not just made anew, else run first (all runs in one shared Ray)."""
    record = None if upstream_ran else reusable(cfg, stage)
    if record is not None:
        log.info("compare: %s %s: reused", stage, cfg.output_dir)
        return record, False
    start = time.perf_counter()
    run(cfg)
    ran[stage] += 1
    log.info("compare: %s %s: %.1f s", stage, cfg.output_dir, time.perf_counter() - start)
    return final_record(cfg, stage), True


def final_record(cfg: Config, stage: str) -> Any:
    """The stage's final file in cfg.output_dir (a selection's: in the outputs it committed)."""
    where = committed_dir(cfg.output_dir) if stage == "select" else cfg.output_dir
    if where is None:
        raise FileNotFoundError(f"nothing committed in {storage.display(cfg.output_dir)}")
    return json.loads(storage.read_text(storage.join(where, FINAL[stage])))


def run_row(
    arm: Arm, seed: int, sel: dict[str, Any], tr: dict[str, Any], ev: dict[str, Any]
) -> dict[str, Any]:
    """One (arm, seed) result from the selection, training and evaluation records."""
    select_s = round(sum(sel["timings_s"].values()), 3)
    metrics = ev["metrics"]
    return {
        "method": arm.label,
        "budget": arm.budget,
        "draw": arm.draw,
        "seed": seed,
        "selected": sel["selected"],
        "training_tokens": tr["training_tokens"],
        "select_s": select_s,
        "train_s": tr["wall_s"],
        "eval_s": ev["wall_s"],
        "wall_s": round(select_s + tr["wall_s"] + ev["wall_s"], 3),
        **{m: math.nan if metrics.get(m) is None else float(metrics[m]) for m in METRICS},
    }


def arm_labels(arms: Sequence[Arm]) -> dict[tuple[str, int | float], str]:
    """Display name per (method label, budget): the label, plus the budget when there are
    several."""
    several = len({a.budget for a in arms if not a.whole_pool}) > 1
    return {
        (a.label, a.budget): f"{a.label} {a.budget}" if several and not a.whole_pool else a.label
        for a in arms
    }


def selection_files(cfg: Config, arms: Sequence[Arm]) -> dict[Arm, str]:
    """Each arm's selection.parquet."""
    dirs = {a: committed_dir(select_config(cfg, a).output_dir) for a in arms}
    return {a: storage.join(d, "selection.parquet") for a, d in dirs.items() if d is not None}


def summary_lines(result: CompareResult) -> list[str]:
    """The Markdown table, how many sub-runs ran or were reused, and where the files are."""
    ran = sum(result.ran.values())
    stages = ", ".join(f"{result.ran[s]} {s}" for s in FINAL)
    return [
        *result.markdown_table,
        "",
        f"{ran} of {result.sub_runs} sub-runs ran ({stages}), {result.sub_runs - ran} reused; "
        f"{result.wall_s:.1f} s",
        f"outputs in {storage.display(result.directory)}/: "
        + ", ".join(storage.name(p) for p in result.files.values()),
    ]
