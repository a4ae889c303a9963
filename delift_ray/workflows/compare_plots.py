"""A comparison's PNG plots (metrics, gain curves, subset composition), drawn on matplotlib's
Agg canvas (no display, no pyplot state)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from io import BytesIO
from typing import TYPE_CHECKING, Any

import numpy as np

from delift_ray import storage
from delift_ray.config import DataConfig
from delift_ray.data.chat import ChatTemplate
from delift_ray.data.read import read_examples
from delift_ray.extras import optional_import
from delift_ray.files import write_bytes
from delift_ray.workflows.compare_tables import METRICS, PLOTS

if TYPE_CHECKING:
    from delift_ray.workflows.compare import Arm

DPI = 110
COMPOSITION_COLUMNS = ("kind", "source")
MAX_CATEGORIES = 10


def metric_bars(
    labels: Sequence[str],
    means: Mapping[str, Sequence[float]],
    stds: Mapping[str, Sequence[float]],
    path: str,
) -> str:
    """One bar panel per metric: the mean per method, error bars one std (none where NaN)."""
    fig = _figure(width=3.0 * len(means) + 0.5, height=3.6)
    x = np.arange(len(labels))
    for k, (name, values) in enumerate(means.items()):
        ax = fig.add_subplot(1, len(means), k + 1)
        std = np.asarray(stds[name], dtype=float)
        err = np.nan_to_num(std, nan=0.0) if np.isfinite(std).any() else None
        ax.bar(x, np.asarray(values, dtype=float), yerr=err, capsize=4, color=_colors(len(x)))
        ax.set_title(name)
        ax.set_xticks(x, labels, rotation=30, ha="right")
        ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def gain_curves(curves: Mapping[str, np.ndarray], path: str) -> str:
    """The marginal gain of each greedy pick against its rank (log scale), one line each."""
    fig = _figure(width=6.4, height=4.0)
    ax = fig.add_subplot(1, 1, 1)
    for label, gains in curves.items():
        ax.plot(np.arange(1, len(gains) + 1), gains, label=label)
    ax.set_xlabel("rank of the pick")
    ax.set_yscale("log", nonpositive="mask")
    ax.set_ylabel("marginal gain (log scale)")
    ax.set_title("greedy gain curve")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def composition_bars(shares: Mapping[str, Mapping[str, float]], column: str, path: str) -> str:
    """Stacked bars: the share of each `column` value in every subset (and the pool)."""
    labels = list(shares)
    categories = list(dict.fromkeys(c for s in shares.values() for c in s))
    fig = _figure(width=1.1 * len(labels) + 3.5, height=4.2)
    ax = fig.add_subplot(1, 1, 1)
    bottom = np.zeros(len(labels))
    for category, color in zip(categories, _colors(len(categories)), strict=True):
        heights = np.array([shares[label].get(category, 0.0) for label in labels])
        ax.bar(labels, heights, bottom=bottom, label=category, color=color)
        bottom += heights
    ax.set_ylabel(f"share of rows by {column}")
    ax.set_ylim(0, 1)
    ax.tick_params(axis="x", labelrotation=30)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small")
    return _save(fig, path)


def _figure(width: float, height: float) -> Any:
    figure = optional_import("matplotlib.figure", "train", "the comparison's plots")
    agg = optional_import("matplotlib.backends.backend_agg", "train", "the comparison's plots")
    fig = figure.Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    agg.FigureCanvasAgg(fig)
    return fig


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab20" if n > 10 else "tab10"]
    return [cmap(k % cmap.N) for k in range(n)]


def _save(fig: Any, path: str) -> str:
    """Write the figure as a PNG atomically (a path or a URI)."""
    png = BytesIO()
    fig.savefig(png, format="png")
    return write_bytes(png.getvalue(), path)


def draw_plots(
    data: DataConfig,
    selections: Mapping[Arm, str],
    table: Sequence[dict[str, Any]],
    labels: dict[tuple[str, int | float], str],
    root: str,
    chat: ChatTemplate | None = None,
) -> dict[str, str]:
    """metrics.png always; gain_curve.png if an arm has gains; composition.png if rows have a
    kind or source column (`selections`: each arm's selection.parquet). Each is removed if this
    comparison does not draw it; `chat` renders chat rows as the runs did)."""
    names = [labels[r["method"], r["budget"]] for r in table]
    files = {
        "metrics": metric_bars(
            names,
            {METRICS[m]: [r[m] for r in table] for m in METRICS},
            {METRICS[m]: [r[f"{m}_std"] for r in table] for m in METRICS},
            storage.join(root, "metrics.png"),
        )
    }
    picks = {a: storage.read_table(path).to_pydict() for a, path in selections.items()}
    curves = {
        labels[a.label, a.budget]: np.asarray(s["gain"], dtype=float)
        for a, s in picks.items()
        if np.isfinite(np.asarray(s["gain"], dtype=float)).any()
    }
    if curves:
        files["gain_curve"] = gain_curves(curves, storage.join(root, "gain_curve.png"))
    shares = composition(data, {a: s["id"] for a, s in picks.items()}, labels, chat)
    if shares is not None:
        column, by_label = shares
        files["composition"] = composition_bars(
            by_label, column, storage.join(root, "composition.png")
        )
    for key in PLOTS:
        if key not in files:  # an earlier comparison's plot would mislead
            storage.delete(storage.join(root, f"{key}.png"))
    return files


def composition(
    data: DataConfig,
    chosen: dict[Arm, list[str]],
    labels: dict[tuple[str, int | float], str],
    chat: ChatTemplate | None = None,
) -> tuple[str, dict[str, dict[str, float]]] | None:
    """(column, share of each value per label, pool first) by the pool's kind or source column;
    random draws averaged; None if the pool has neither column."""
    records = {e.id: e.record for e in read_examples(data, chat).examples}
    column = next((c for c in COMPOSITION_COLUMNS if any(c in r for r in records.values())), None)
    if column is None:
        return None
    value = {i: str(r.get(column, "(none)")) for i, r in records.items()}
    common = [v for v, _ in Counter(value.values()).most_common(MAX_CATEGORIES)]
    category = {i: v if v in common else "other" for i, v in value.items()}
    draws: dict[str, list[Counter[str]]] = {"pool": [Counter(category.values())]}
    for arm, ids in chosen.items():
        draws.setdefault(labels[arm.label, arm.budget], []).append(
            Counter(category[i] for i in ids)
        )
    order = [*common, "other"] if len(set(value.values())) > len(common) else common
    return column, {
        label: {c: float(np.mean([n[c] / n.total() for n in counts])) for c in order}
        for label, counts in draws.items()
    }
