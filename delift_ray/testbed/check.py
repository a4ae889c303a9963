"""Acceptance check: does a same-kind demonstration help the base model more than another kind's?

From a pool's clean rows (not wrong, not off-task, not near-duplicates), `per_kind` rows of each
kind are sampled; every sampled row is a target and a demonstration, and U[i, j] = d0[i] -
d1[i, j] is scored for all pairs i != j with delift_ray.utility.UtilityModel under the default
templates. Per target i: same_i = mean U[i, j] over same-kind j, other_i = mean over other-kind
j. Per kind: the means of same_i and other_i, their difference (mean of same_i - other_i) and
its standard error over targets. A kind is accepted when the difference is clearly positive:
more than Z_ACCEPT standard errors and at least MIN_DIFF (d lies in [0, 1]; an untrained model
shows differences of 1e-5 that a tiny standard error can make "significant").

    python -m delift_ray.testbed.check --model .cache/testbed/model-KEY --pool DIR/pool.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from delift_ray.config import DataConfig, ModelConfig, ScoringConfig, TemplatesConfig
from delift_ray.data.read import read_examples
from delift_ray.files import atomic_write_bytes
from delift_ray.models.load import load_model
from delift_ray.scoring.utility_model import UtilityModel
from delift_ray.testbed.tasks import GENERIC_INSTRUCTIONS, KINDS

Z_ACCEPT = 3.0
MIN_DIFF = 0.01


@dataclass(frozen=True)
class KindRow:
    """One kind's result: mean utilities of same- and other-kind demonstrations, acceptance."""

    kind: str
    targets: int
    d0: float
    same: float
    other: float
    diff: float
    se: float

    @property
    def accepted(self) -> bool:
        """Whether same-kind demonstrations clearly help more (see the module docstring)."""
        return self.targets > 1 and self.diff > Z_ACCEPT * self.se and self.diff >= MIN_DIFF


def sample_clean(pool_path: str | Path, per_kind: int, seed: int) -> list[tuple[str, str, str]]:
    """(x, y, kind) of up to per_kind clean rows of each kind, rendered as scoring sees them."""
    rows = read_examples(DataConfig(path=str(pool_path))).examples
    by_kind: dict[str, list[tuple[str, str, str]]] = {}
    for e in rows:
        r = e.record
        if not (r.get("is_wrong") or r.get("is_off_task") or r.get("near_dup_of")):
            by_kind.setdefault(str(r["kind"]), []).append((e.x, e.y, str(r["kind"])))
    rng = random.Random(seed)
    return [
        row
        for kind in sorted(by_kind)
        for row in rng.sample(by_kind[kind], min(per_kind, len(by_kind[kind])))
    ]


def sample_generic(kinds: list[str], per_kind: int, seed: int) -> list[tuple[str, str, str]]:
    """(x, y, kind) of per_kind fresh rows of each kind under generic instructions, the way
    pretraining draws them: a diagnostic of the model's own distribution, not the acceptance."""
    cfg, rng = DataConfig(), random.Random(f"generic:{seed}")
    rows = []
    for kind in sorted(kinds):
        for _ in range(per_kind):
            inp = KINDS[kind].draw(rng)
            instruction = rng.choice(GENERIC_INSTRUCTIONS)
            x = cfg.prompt_template.format(instruction=instruction, input=inp)
            rows.append((x, cfg.response_template.format(output=KINDS[kind].solve(inp)), kind))
    return rows


def utilities(
    model_path: str | Path, xs: list[str], ys: list[str], device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """(d0, U) of every example against every other (U's diagonal is NaN)."""
    loaded = load_model(ModelConfig(path=str(model_path), device=device))
    scorer = UtilityModel(
        loaded.model, loaded.tokenizer, TemplatesConfig(), ScoringConfig(), loaded.max_length
    )
    enc = scorer.encode(xs, ys)
    d0 = scorer.plain(enc)
    n = len(xs)
    i, j = np.nonzero(~np.eye(n, dtype=bool))
    u = np.full((n, n), np.nan)
    u[i, j] = d0[i] - scorer.pairs(enc, enc, i, j)
    return d0, u


def kind_rows(kinds: list[str], d0: np.ndarray, u: np.ndarray) -> list[KindRow]:
    """Per kind, same- vs other-kind demonstration utility over its targets."""
    labels = np.array(kinds)
    out = []
    for kind in sorted(set(kinds)):
        targets = np.flatnonzero(labels == kind)
        same = np.array([np.nanmean(u[t, labels == kind]) for t in targets])
        other = np.array([np.nanmean(u[t, labels != kind]) for t in targets])
        diff = same - other
        se = float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else math.nan
        out.append(
            KindRow(
                kind,
                len(targets),
                float(d0[targets].mean()),
                float(same.mean()),
                float(other.mean()),
                float(diff.mean()),
                se,
            )
        )
    return out


def check(
    model_path: str | Path,
    pool_path: str | Path,
    per_kind: int = 10,
    seed: int = 0,
    generic: bool = False,
    device: str = "cpu",
) -> list[KindRow]:
    """Score a clean sample of the pool (or, `generic`, fresh rows of the pool's kinds under
    generic instructions) and return one KindRow per kind."""
    sample = sample_clean(pool_path, per_kind, seed)
    if generic:
        sample = sample_generic(sorted({s[2] for s in sample}), per_kind, seed)
    d0, u = utilities(model_path, [s[0] for s in sample], [s[1] for s in sample], device)
    return kind_rows([s[2] for s in sample], d0, u)


def markdown(rows: list[KindRow]) -> str:
    """The rows as a Markdown table, then the accepted kinds as a --kinds value (pool order)."""
    lines = [
        "| kind | targets | mean d0 | U same-kind | U other-kind | difference ± SE | z "
        "| accepted |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        z = r.diff / r.se if r.se > 0 else math.nan
        lines.append(
            f"| {r.kind} | {r.targets} | {r.d0:.3f} | {r.same:+.4f} | {r.other:+.4f} | "
            f"{r.diff:+.4f} ± {r.se:.4f} | {z:.1f} | {'yes' if r.accepted else 'no'} |"
        )
    passed = {r.kind for r in rows if r.accepted}
    accepted = ",".join(k for k in KINDS if k in passed)  # pool order: commonest first
    return "\n".join(lines) + f"\n\naccepted kinds: {accepted or '(none)'}\n"


def main(argv: list[str] | None = None) -> None:
    """Command line: print the per-kind table for a model and a pool."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--pool", required=True)
    parser.add_argument("--per-kind", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to score")
    parser.add_argument(
        "--generic",
        action="store_true",
        help="diagnostic: fresh rows under generic instructions instead of the pool's rows",
    )
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    rows = check(args.model, args.pool, args.per_kind, args.seed, args.generic, args.device)
    print(markdown(rows), end="")
    if args.json:
        data = [{**r.__dict__, "accepted": r.accepted} for r in rows]
        atomic_write_bytes(args.json, (json.dumps(data, indent=1) + "\n").encode())


if __name__ == "__main__":
    main()
