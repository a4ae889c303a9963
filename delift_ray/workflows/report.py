"""Human-readable summaries of a run (printed at the end of the CLI)."""

from __future__ import annotations

from delift_ray.workflows.outputs import RunOutputs


def summary_lines(result: RunOutputs) -> list[str]:
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
