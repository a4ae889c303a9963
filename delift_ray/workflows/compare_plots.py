"""PNG plots of a comparison, drawn on matplotlib's Agg canvas (no display, no pyplot state)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from delift_ray.files import atomic_path

DPI = 110


def metric_bars(
    labels: Sequence[str],
    means: Mapping[str, Sequence[float]],
    stds: Mapping[str, Sequence[float]],
    path: Path,
) -> Path:
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


def gain_curves(curves: Mapping[str, np.ndarray], path: Path) -> Path:
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


def composition_bars(shares: Mapping[str, Mapping[str, float]], column: str, path: Path) -> Path:
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
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab20" if n > 10 else "tab10"]
    return [cmap(k % cmap.N) for k in range(n)]


def _save(fig: Any, path: Path) -> Path:
    """Write the figure as a PNG atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
