"""A comparison's tables: one row per run, one per method and budget (means, sample standard
deviations), written as CSV and as comparison.md."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from delift_ray import storage
from delift_ray.config import Config
from delift_ray.files import write_text

METRICS = {
    "exact_match": "exact match",
    "rouge1": "ROUGE-1",
    "rougeL": "ROUGE-L",
    "cosine": "cosine",
    "response_loss": "response loss",
}
COSTS = ("selected", "training_tokens", "select_s", "train_s", "eval_s", "wall_s")
RUN_COLUMNS = ("method", "budget", "draw", "seed", *COSTS, *METRICS)
TABLE_COLUMNS = (
    "method",
    "budget",
    "runs",
    *COSTS,
    *(c for m in METRICS for c in (m, f"{m}_std")),
)
PLOTS = ("metrics", "gain_curve", "composition")


def summarize(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (method, budget): run count, mean costs, mean and sample std per metric."""
    groups: dict[tuple[str, int | float], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["method"], r["budget"]), []).append(r)
    table = []
    for (method, budget), rows in groups.items():
        row: dict[str, Any] = {"method": method, "budget": budget, "runs": len(rows)}
        row.update({k: float(np.mean([r[k] for r in rows])) for k in COSTS})
        for m in METRICS:
            values = [r[m] for r in rows]
            row[m] = float(np.mean(values))
            row[f"{m}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
        table.append(row)
    return table


def write_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str], path: str) -> str:
    """Write rows as CSV atomically; NaN and None as empty cells, floats at full precision."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([[_cell(row[c]) for c in columns] for row in rows])
    return write_text(buf.getvalue(), path)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def markdown_table(
    table: Sequence[dict[str, Any]], labels: dict[tuple[str, int | float], str]
) -> list[str]:
    """The comparison as Markdown table lines: metrics as mean ± std, then costs."""
    head = ["method", "budget", "runs", "rows", *METRICS.values(), "training tokens", "wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table:
        cells = [
            labels[row["method"], row["budget"]],
            str(row["budget"]),
            str(row["runs"]),
            f"{row['selected']:,.0f}",
            *(format_metric(row[m], row[f"{m}_std"]) for m in METRICS),
            f"{row['training_tokens']:,.0f}",
            f"{row['wall_s']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def format_metric(mean: float, std: float) -> str:
    """`mean ± std` to 4 decimals; the mean alone for one run; n/a for a missing metric."""
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def markdown(cfg: Config, table: list[str], seeds: list[int], files: dict[str, str]) -> str:
    """comparison.md: the setup, the table, and the plots."""
    t = cfg.train
    test = cfg.eval.test.path if cfg.eval.test is not None else ""
    setup = (
        f"Pool `{storage.display(cfg.data.path)}`, test set `{storage.display(test)}`, "
        f"model `{storage.display(cfg.model.path)}`. "
        f"One training recipe for every subset: {t.method}, {t.epochs} epoch(s), lr {t.lr}, "
        f"batch {t.batch_size}, {t.workers} worker(s); training seeds "
        f"{', '.join(map(str, seeds))}; random draws {cfg.compare.random_subsets}"
        f"{' (one seed each, in turn)' if cfg.compare.draw_seeds == 'one' else ''}. "
        "Metrics are means over a method's runs, ± the sample standard deviation where it has "
        "several; rows = subset size; wall s = selection + training + evaluation of one run."
    )
    variant = ", ".join(f"{k} {v}" for k, v in cfg.selection.variant().items())
    setup += f" Selection variant of the utility methods: {variant} (delift-paper: the paper's)."
    images = [f"![{key}]({storage.name(files[key])})" for key in PLOTS if key in files]
    return "\n".join(["# Selection methods compared", "", setup, "", *table, "", *images]) + "\n"
