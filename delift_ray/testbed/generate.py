"""Synthetic instruction pools with planted structure, and a held-out test set.

Pool rows are alpaca records (instruction, input, output) plus hidden labels: `kind`,
`is_wrong`, `wrong_detectable`, `is_off_task` and `near_dup_of` (the content id of the row a
near-duplicate copies, else null). Kinds are imbalanced (geometric weights from the first kind
down to the last, `imbalance` times rarer); wrong, near-duplicate and off-task rows are exact
fractions of the pool. The test set has `test_per_kind` clean rows per kind; no input string
appears in two sets, so no test row shares content with a pool row. The validation set
(`val_per_kind` clean rows per kind, drawn after the pool and the test set, so adding it changes
neither) is what a recipe is chosen on, never the test set. Deterministic for a seed.

    python -m delift_ray.testbed.generate --out runs/testbed --n 1200 --seed 0
"""

from __future__ import annotations

import argparse
import json
import random
import string
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

from delift_ray.config import DataConfig
from delift_ray.data.examples import example_id
from delift_ray.files import atomic_write_bytes
from delift_ray.testbed.tasks import KINDS, Kind

GARBAGE_CHARS = string.ascii_letters + string.digits + "#%&*+-/=?@"


@dataclass(frozen=True)
class PoolSpec:
    """What a pool is made of; fractions are of the whole pool."""

    n: int = 1200
    kinds: tuple[str, ...] = tuple(KINDS)
    imbalance: float = 6.0  # frequency of the first (commonest) kind / the last (rarest)
    near_dup: float = 0.10
    wrong: float = 0.10
    detectable: float = 0.5  # share of the wrong rows whose answer has the wrong form
    off_task: float = 0.05
    test_per_kind: int = 60
    val_per_kind: int = 30
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown or len(set(self.kinds)) != len(self.kinds) or not self.kinds:
            raise ValueError(f"kinds must be distinct known kinds, got {list(self.kinds)}")
        if self.imbalance < 1:
            raise ValueError(f"imbalance must be >= 1, got {self.imbalance}")
        for name in ("near_dup", "wrong", "detectable", "off_task"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        spare = self.n - self.n_off_task - len(self.kinds)  # each kind keeps a row to copy
        if min(self.counts.values()) < 1 or self.n_wrong + self.n_near_dup > spare:
            raise ValueError(f"n={self.n} is too small for these kinds and fractions")

    @property
    def counts(self) -> dict[str, int]:
        """On-task rows per kind (clean, wrong and near-duplicate rows together)."""
        return allocate(self.n - self.n_off_task, kind_weights(self.kinds, self.imbalance))

    @property
    def n_wrong(self) -> int:
        """Rows with a wrong answer."""
        return round(self.wrong * self.n)

    @property
    def n_near_dup(self) -> int:
        """Near-duplicate rows."""
        return round(self.near_dup * self.n)

    @property
    def n_off_task(self) -> int:
        """Off-task rows."""
        return round(self.off_task * self.n)


def kind_weights(kinds: tuple[str, ...], imbalance: float) -> dict[str, float]:
    """Geometric frequencies from the first kind to the last, `imbalance` times rarer; sum 1."""
    steps = max(len(kinds) - 1, 1)
    raw = [imbalance ** (-k / steps) for k in range(len(kinds))]
    return {kind: w / sum(raw) for kind, w in zip(kinds, raw)}


def allocate(total: int, weights: dict[str, float]) -> dict[str, int]:
    """Integer counts summing to `total`, proportional to weights (largest remainder)."""
    exact = {k: total * w for k, w in weights.items()}
    counts = {k: int(v) for k, v in exact.items()}
    by_remainder = sorted(weights, key=lambda k: counts[k] - exact[k])
    for k in by_remainder[: total - sum(counts.values())]:
        counts[k] += 1
    return counts


def content_id(row: dict) -> str:
    """The id delift_ray.data gives the row under the default prompt and response templates."""
    cfg = DataConfig()
    x = cfg.prompt_template.format(instruction=row["instruction"], input=row["input"])
    return example_id(x, cfg.response_template.format(output=row["output"]))


class Sets(NamedTuple):
    """A testbed's three sets of rows."""

    pool: list[dict]
    test: list[dict]
    validation: list[dict]


def generate(spec: PoolSpec) -> Sets:
    """The pool, test and validation rows of a spec."""
    rng = random.Random(spec.seed)
    taken: set[str] = set()  # every input string used so far, in any set
    test = _clean_rows(spec.kinds, spec.test_per_kind, rng, taken)
    pool = _on_task_rows(spec, rng, taken) + _off_task_rows(spec, rng, taken)
    rng.shuffle(pool)
    return Sets(pool, test, _clean_rows(spec.kinds, spec.val_per_kind, rng, taken))


def write(spec: PoolSpec, out_dir: str | Path) -> dict[str, Path]:
    """Write pool.jsonl, test.jsonl, validation.jsonl and testbed.json (the spec and counts)
    atomically."""
    out = Path(out_dir)
    sets = generate(spec)
    paths = {name: out / f"{name}.jsonl" for name in Sets._fields}
    for name, rows in zip(Sets._fields, sets):
        atomic_write_bytes(paths[name], "".join(json.dumps(r) + "\n" for r in rows).encode())
    paths["spec"] = out / "testbed.json"
    meta = {"spec": asdict(spec), "counts": spec.counts, "pool_rows": len(sets.pool)}
    atomic_write_bytes(paths["spec"], (json.dumps(meta, indent=2) + "\n").encode())
    return paths


def _clean_rows(
    kinds: tuple[str, ...], per_kind: int, rng: random.Random, taken: set[str]
) -> list[dict]:
    """`per_kind` clean rows of each kind on fresh inputs, kind by kind."""
    return [_row(k, _fresh(KINDS[k], rng, taken), rng) for k in kinds for _ in range(per_kind)]


def _fresh(kind: Kind, rng: random.Random, taken: set[str]) -> str:
    """A new input of the kind's form, never used before in this testbed."""
    while True:
        inp = kind.draw(rng)
        if inp not in taken:
            taken.add(inp)
            return inp


def _row(
    kind: str,
    inp: str,
    rng: random.Random,
    output: str | None = None,
    *,
    wrong: bool = False,
    detectable: bool = False,
    off_task: bool = False,
    near_dup_of: str | None = None,
    instruction: str | None = None,
) -> dict:
    """One labelled row; output defaults to the right answer, instruction to a random phrasing."""
    return {
        "instruction": instruction or rng.choice(KINDS[kind].phrasings),
        "input": inp,
        "output": KINDS[kind].solve(inp) if output is None else output,
        "kind": kind,
        "is_wrong": wrong,
        "wrong_detectable": detectable,
        "is_off_task": off_task,
        "near_dup_of": near_dup_of,
    }


def _on_task_rows(spec: PoolSpec, rng: random.Random, taken: set[str]) -> list[dict]:
    """Clean, wrong and near-duplicate rows, spec.counts of each kind."""
    slots = [kind for kind in spec.kinds for _ in range(spec.counts[kind])]
    firsts = {slots.index(kind) for kind in spec.kinds}  # kept clean: originals to copy
    eligible = [s for s in range(len(slots)) if s not in firsts]
    rng.shuffle(eligible)
    wrong = set(eligible[: spec.n_wrong])
    detectable = set(eligible[: round(spec.detectable * spec.n_wrong)])
    dups = set(eligible[spec.n_wrong : spec.n_wrong + spec.n_near_dup])
    rows: list[dict] = []
    clean: dict[str, list[dict]] = {kind: [] for kind in spec.kinds}
    for s, kind_name in enumerate(slots):
        if s in dups:
            continue
        kind = KINDS[kind_name]
        inp = _fresh(kind, rng, taken)
        if s in detectable:
            rows.append(
                _row(kind_name, inp, rng, kind.wrong_form(inp, rng), wrong=True, detectable=True)
            )
        elif s in wrong:
            rows.append(_row(kind_name, inp, rng, kind.plausible_wrong(inp, rng), wrong=True))
        else:
            rows.append(_row(kind_name, inp, rng))
            clean[kind_name].append(rows[-1])
    used = {(r["instruction"], r["input"]) for r in rows}
    for s in sorted(dups):
        rows.append(_near_dup(rng.choice(clean[slots[s]]), rng, taken, used))
    return rows


def _near_dup(
    original: dict, rng: random.Random, taken: set[str], used: set[tuple[str, str]]
) -> dict:
    """A copy of a clean row with its instruction paraphrased (while an unused phrasing is
    left) or else its input perturbed; `used` holds the (instruction, input) pairs taken."""
    kind = KINDS[original["kind"]]
    of = content_id(original)
    inp = original["input"]
    others = [p for p in kind.phrasings if (p, inp) not in used]
    if others and rng.random() < 0.5:
        used.add((instruction := rng.choice(others), inp))
        return _row(kind.name, inp, rng, near_dup_of=of, instruction=instruction)
    while True:
        inp = kind.perturb(original["input"], rng)
        if inp not in taken:
            taken.add(inp)
            return _row(kind.name, inp, rng, near_dup_of=of, instruction=original["instruction"])


def _off_task_rows(spec: PoolSpec, rng: random.Random, taken: set[str]) -> list[dict]:
    """Rows whose instruction (of a kind drawn by frequency) the input and output ignore:
    half answer a kind of another input form, half are garbage strings."""
    weights = kind_weights(spec.kinds, spec.imbalance)
    rows = []
    for kind_name in rng.choices(
        spec.kinds, weights=[weights[k] for k in spec.kinds], k=spec.n_off_task
    ):
        form = KINDS[kind_name].form
        unrelated = [k for k in KINDS.values() if k.form != form]
        if rng.random() < 0.5:
            other = rng.choice(unrelated)
            inp = _fresh(other, rng, taken)
            output = other.solve(inp)
        else:
            inp = _garbage(rng, taken)
            output = "".join(rng.choices(GARBAGE_CHARS, k=rng.randint(3, 10)))
        rows.append(_row(kind_name, inp, rng, output, off_task=True))
    return rows


def _garbage(rng: random.Random, taken: set[str]) -> str:
    while True:
        inp = "".join(rng.choices(GARBAGE_CHARS, k=rng.randint(3, 10)))
        if inp not in taken:
            taken.add(inp)
            return inp


def main(argv: list[str] | None = None) -> None:
    """Command line: write a pool, a test set, a validation set and their spec to --out."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--n", type=int, default=PoolSpec.n)
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated, commonest first")
    parser.add_argument("--imbalance", type=float, default=PoolSpec.imbalance)
    parser.add_argument("--near-dup", type=float, default=PoolSpec.near_dup)
    parser.add_argument("--wrong", type=float, default=PoolSpec.wrong)
    parser.add_argument("--off-task", type=float, default=PoolSpec.off_task)
    parser.add_argument("--test-per-kind", type=int, default=PoolSpec.test_per_kind)
    parser.add_argument("--val-per-kind", type=int, default=PoolSpec.val_per_kind)
    parser.add_argument("--seed", type=int, default=PoolSpec.seed)
    args = parser.parse_args(argv)
    spec = PoolSpec(
        n=args.n,
        kinds=tuple(args.kinds.split(",")),
        imbalance=args.imbalance,
        near_dup=args.near_dup,
        wrong=args.wrong,
        off_task=args.off_task,
        test_per_kind=args.test_per_kind,
        val_per_kind=args.val_per_kind,
        seed=args.seed,
    )
    for name, path in write(spec, args.out).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
