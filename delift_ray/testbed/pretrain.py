"""Pretrain the testbed's base model: a small Llama that knows the kinds' transformations.

Every sequence is a fresh random input of a kind drawn uniformly, under a GENERIC instruction
(never a pool phrasing), laid out as scoring and training see rows: bare ``x EOS y EOS`` (the
train/eval layout), the plain scoring template, or the with-example template whose example is
of the same kind (or, less often, of another kind). With a generic instruction only the
example says which transformation is wanted, so the model learns to infer it from a
demonstration: the signal DELIFT's utilities measure. Scales (all pre-registered in
benchmarks/TESTBED.md) vary the model, the tokenizer, the instruction text and where the loss
is; "packed" and "packed-long" (session 4) read characters (the templates' fixed texts as one token
each) and packs many sequences into a row, each attending only to itself.

Deterministic for a seed and a thread count. Cached under <out>/model-<key>, key = hash of the
settings, this code and the library versions: a second call returns at once.

    python -m delift_ray.testbed.pretrain --out .cache/testbed --scale packed
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import shutil
import string
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from delift_ray.config import DataConfig, TemplatesConfig
from delift_ray.files import atomic_write_bytes
from delift_ray.models.tiny import build_model, build_tokenizer
from delift_ray.scoring.templates import Prompts, split_template
from delift_ray.testbed.tasks import GENERIC_INSTRUCTIONS, KINDS, draw_word

LAYOUTS = ("bare", "plain", "same", "other")  # "same"/"other": with an example of that kind
LogFn = Callable[[str], None]
CODE_FILES = ("testbed/tasks.py", "testbed/pretrain.py", "models/tiny.py", "scoring/templates.py")
STAMP = "pretrain.json"
CHUNK = 4  # step_rows draws sequences CHUNK * batch at a time


@dataclass(frozen=True)
class Settings:
    """Model size, tokenizer, data mix and optimisation of one pretraining run."""

    hidden: int
    layers: int
    heads: int
    vocab: int
    steps: int
    batch: int = 32
    lr: float = 3e-3
    warmup: int = 50
    max_positions: int = 256
    tokenizer_texts: int = 4000
    mix: tuple[float, ...] = (0.15, 0.15, 0.55, 0.15)  # weights of LAYOUTS
    kinds: tuple[str, ...] = tuple(KINDS)
    seed: int = 0
    instructions: str = "generic"  # or "varied": half are random pseudo-word sentences
    loss: str = "all"  # or "response": loss on the query's response tokens only
    tags: bool = False  # bare and plain sequences name their kind by a pseudo-word tag (TAGS)
    pack: bool = False  # a row holds several sequences end to end, each attending to itself
    literals: bool = False  # the default templates' fixed texts are one token each
    device: str = "cpu"  # or "cuda"; part of the cache key
    threads: int = 1  # CPU threads; a run is deterministic for a given count

    def __post_init__(self) -> None:
        if self.instructions not in ("generic", "varied"):
            raise ValueError(f"instructions must be generic or varied, not {self.instructions!r}")
        if self.loss not in ("all", "response"):
            raise ValueError(f"loss must be all or response, not {self.loss!r}")


FULL = Settings(hidden=256, layers=4, heads=4, vocab=1024, steps=1500)
# session 3: a character-level tokenizer (259 = the byte alphabet + 3 specials: no merges), so
# every letter is a token the model has trained; loss on the query's response only
CHAR = Settings(
    hidden=128, layers=2, heads=4, vocab=259, steps=1000, max_positions=512, loss="response"
)
# session 3's amendment: single-example sequences name their kind by a tag (TAGS) so that they
# teach the transformations; more of them, and more steps
TAGGED = replace(CHAR, steps=1500, mix=(0.35, 0.10, 0.40, 0.15), tags=True)

SCALES = {  # every scale but "tiny" and "small" is pre-registered in benchmarks/TESTBED.md
    "tiny": Settings(
        hidden=32, layers=1, heads=2, vocab=320, steps=12, batch=8, warmup=2, tokenizer_texts=200
    ),
    "small": Settings(hidden=128, layers=2, heads=4, vocab=768, steps=600),
    "full": FULL,
    "full-varied": replace(FULL, instructions="varied", loss="response"),
    "char": CHAR,
    "char-varied": replace(CHAR, instructions="varied"),
    "char-tagged": TAGGED,
    "char-tagged-varied": replace(TAGGED, instructions="varied"),
    # session 4: E/F's data, but every position does work: the templates' fixed texts are one
    # token each, many sequences share a row (each attends only to itself), two threads
    "packed": replace(
        TAGGED,
        instructions="varied",
        mix=(0.35, 0.10, 0.45, 0.10),
        steps=3000,
        batch=16,
        warmup=100,
        pack=True,
        literals=True,
        threads=2,
    ),
}
# session 4, second: the same sequences in 32 rows of 256 positions (no sequence is longer than
# 165; less attention spent on masked pairs) and steps for the whole 15 minutes
SCALES["packed-long"] = replace(SCALES["packed"], batch=32, max_positions=256, steps=4400)


def cache_key(settings: Settings) -> str:
    """Hash of the settings, the default templates, this code and the library versions."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256(json.dumps(asdict(settings), sort_keys=True).encode())
    h.update(json.dumps([asdict(TemplatesConfig()), asdict(DataConfig())]).encode())
    for name in CODE_FILES:
        h.update((root / name).read_bytes())
    h.update(" ".join(version(p) for p in ("torch", "transformers", "tokenizers")).encode())
    return h.hexdigest()[:16]


def pretrain(out_root: str | Path, settings: Settings, log: LogFn | None = None) -> Path:
    """The model directory for `settings` under out_root, trained now unless already cached."""
    out = Path(out_root) / f"model-{cache_key(settings)}"
    if (out / STAMP).exists():
        return out
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    started = time.perf_counter()
    losses = _train(settings, tmp, log)
    report = {
        "settings": asdict(settings),
        "key": out.name,
        "wall_s": round(time.perf_counter() - started, 1),
        "losses": losses,
    }
    atomic_write_bytes(tmp / STAMP, (json.dumps(report, indent=1) + "\n").encode())
    if (out / STAMP).exists():  # another process finished the same model first
        shutil.rmtree(tmp)
    else:
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    return out


# ---------------------------------------------------------------------------------------------
# data


@dataclass(frozen=True)
class Item:
    """One pretraining sequence before tokenization: layout, query (x, y), example (x, y)."""

    layout: str
    x: str
    y: str
    ex: str = ""
    ey: str = ""


def _tags() -> dict[str, str]:
    """A fixed pseudo-word sentence per kind ("Task mevo."): names a kind, no pool wording."""
    rng, words = random.Random("tags"), set[str]()
    while len(words) < len(KINDS):
        words.add(draw_word(rng))
    return {kind: f"Task {word}." for kind, word in zip(KINDS, sorted(words), strict=True)}


TAGS = _tags()


def instruction(settings: Settings, rng: random.Random) -> str:
    """A generic instruction, or under "varied" half the time a sentence of 2-6 pseudo-words."""
    if settings.instructions == "varied" and rng.random() < 0.5:
        words = [draw_word(rng) for _ in range(rng.randint(2, 6))]
        return " ".join(words).capitalize() + "."
    return rng.choice(GENERIC_INSTRUCTIONS)


def _pair(
    kind: str, settings: Settings, rng: random.Random, tagged: bool = False
) -> tuple[str, str]:
    """A rendered (x, y) of a kind on a fresh input, under an instruction that names no kind
    (or, when tagged, the kind's pseudo-word tag)."""
    cfg = DataConfig()
    inp = KINDS[kind].draw(rng)
    said = TAGS[kind] if tagged else instruction(settings, rng)
    x = cfg.prompt_template.format(instruction=said, input=inp)
    return x, cfg.response_template.format(output=KINDS[kind].solve(inp))


def draw_item(settings: Settings, rng: random.Random) -> Item:
    """A random pretraining sequence: kind uniform, layout by settings.mix."""
    kind = rng.choice(settings.kinds)
    layout = rng.choices(LAYOUTS, weights=settings.mix)[0]
    x, y = _pair(kind, settings, rng, tagged=settings.tags and layout in ("bare", "plain"))
    if layout in ("bare", "plain"):
        return Item(layout, x, y)
    others = [k for k in settings.kinds if k != kind] or [kind]
    ex, ey = _pair(kind if layout == "same" else rng.choice(others), settings, rng)
    return Item(layout, x, y, ex, ey)


def item_text(item: Item, templates: TemplatesConfig) -> str:
    """The sequence as text (tokenizer training), special tokens left out."""
    if item.layout == "bare":
        return item.x + item.y
    if item.layout == "plain":
        return templates.plain.format(query=item.x) + item.y
    prompt = templates.with_example.format(
        example_prompt=item.ex, example_response=item.ey, query=item.x
    )
    return prompt + item.y


def encode_items(items: list[Item], prompts: Prompts) -> tuple[list[np.ndarray], list[int]]:
    """Token ids of each item as scoring (templates) or training (bare) lays it out, and the
    number of trailing tokens that are the query's response and its EOS."""
    tok = prompts.tokenizer
    queries = prompts.encode([it.x for it in items], [it.y for it in items])
    demos = prompts.encode([it.ex for it in items], [it.ey for it in items])
    bare = tok([it.x for it in items], add_special_tokens=False)["input_ids"]
    shown = np.array([b for b, it in enumerate(items) if it.layout in ("same", "other")])
    with_demo = dict(zip(shown.tolist(), prompts.pair_prompts(queries, shown, demos, shown)[0]))
    out = []
    for b, it in enumerate(items):
        if it.layout == "bare":
            seq = [prompts.bos, bare[b], prompts.eos, queries.response[b], prompts.eos]
            out.append(np.concatenate([np.asarray(s, dtype=np.int32) for s in seq]))
        elif b in with_demo:
            out.append(prompts.pair_sequence(queries, b, with_demo[b]))
        else:
            out.append(prompts.plain_sequence(queries, b))
    return out, [len(r) + 1 for r in queries.response]


def segment_mask(length: int, tail: int, loss: str) -> np.ndarray:
    """1 where a sequence's token is predicted: every token, or its last `tail` (response, EOS)."""
    mask = np.ones(length, dtype=np.int8)
    if loss == "response":
        mask[: length - tail] = 0
    return mask


@dataclass
class Step:
    """One training step's rows: token ids, loss masks (1 = predicted) and, per row, the
    lengths of the sequences laid end to end in it."""

    ids: list[np.ndarray]
    masks: list[np.ndarray]
    lengths: list[list[int]]


def pack_rows(seqs: list[np.ndarray], tails: list[int], settings: Settings) -> Step:
    """One sequence per row, or (pack) sequences end to end in order while they fit in
    max_positions; a sequence that would overflow starts a row."""
    rows: list[list[np.ndarray]] = []
    masks: list[list[np.ndarray]] = []
    used = settings.max_positions
    for seq, tail in zip(seqs, tails, strict=True):
        if not settings.pack or used + len(seq) > settings.max_positions:
            rows.append([])
            masks.append([])
            used = 0
        rows[-1].append(seq)
        masks[-1].append(segment_mask(len(seq), tail, settings.loss))
        used += len(seq)
    return Step(
        [np.concatenate(r) for r in rows],
        [np.concatenate(m) for m in masks],
        [[len(s) for s in r] for r in rows],
    )


def step_rows(settings: Settings, prompts: Prompts, rng: random.Random) -> Step:
    """The `batch` rows of one training step, drawn from rng (sequences in chunks of CHUNK
    rows' worth: fewer, larger tokenizer calls)."""
    step = Step([], [], [])
    while len(step.ids) < settings.batch:
        seqs, tails = encode_items(
            [draw_item(settings, rng) for _ in range(CHUNK * settings.batch)], prompts
        )
        more = pack_rows(seqs, tails, settings)
        step.ids += more.ids
        step.masks += more.masks
        step.lengths += more.lengths
    b = settings.batch
    return Step(step.ids[:b], step.masks[:b], step.lengths[:b])


def step_stream(settings: Settings, prompts: Prompts) -> Iterator[Step]:
    """Every step's rows in order; step s is drawn from its own seeded stream."""
    for step in range(1, settings.steps + 1):
        yield step_rows(settings, prompts, random.Random(f"data:{settings.seed}:{step}"))


def step_tensors(step: Step, pad_id: int) -> dict[str, Any]:
    """Model inputs of a step: right-padded ids, labels (-100 where not predicted), position ids
    restarting at every sequence, and a 4D attention mask in which each sequence sees only its
    own earlier tokens (padding sees only itself)."""
    import torch

    width = max(len(r) for r in step.ids)
    ids = torch.full((len(step.ids), width), pad_id, dtype=torch.long)
    labels = torch.full_like(ids, -100)
    positions = torch.zeros_like(ids)
    segment = -1 - torch.arange(width).repeat(len(step.ids), 1)  # each padding its own
    for b, (row, keep, lengths) in enumerate(zip(step.ids, step.masks, step.lengths, strict=True)):
        row_ids = torch.as_tensor(row, dtype=torch.long)
        ids[b, : len(row)] = row_ids
        labels[b, : len(row)] = row_ids.masked_fill(torch.as_tensor(keep) == 0, -100)
        starts = np.repeat(np.cumsum([0, *lengths[:-1]]), lengths)
        positions[b, : len(row)] = torch.as_tensor(np.arange(len(row)) - starts)
        segment[b, : len(row)] = torch.as_tensor(np.repeat(np.arange(len(lengths)), lengths))
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    attend = (segment[:, :, None] == segment[:, None, :]) & causal
    return {
        "input_ids": ids,
        "labels": labels,
        "position_ids": positions,
        "attention_mask": attend[:, None],
    }


# ---------------------------------------------------------------------------------------------
# training


def template_literals() -> tuple[str, ...]:
    """The fixed texts of the default templates and rendering, as scoring tokenizes them: the
    with-example head and mid, the plain mid, and the prompt template's literal parts."""
    templates, data = TemplatesConfig(), DataConfig()
    example = split_template(templates.with_example, True)
    plain = split_template(templates.plain, False)
    parts = [lit for lit, *_ in string.Formatter().parse(data.prompt_template)]
    fixed = (example.literals[0], example.literals[-2], plain.literals[-2])  # before a field
    return tuple(t for t in (*(f.rstrip() for f in fixed), *parts) if t.strip())


def _train(settings: Settings, out: Path, log: LogFn | None) -> list[list[float]]:
    """Train tokenizer + model into `out`; returns [step, mean loss] every 50 steps."""
    import torch

    torch.set_num_threads(settings.threads)
    templates = TemplatesConfig()
    tok_rng = random.Random(f"tokenizer:{settings.seed}")
    texts = [
        item_text(draw_item(settings, tok_rng), templates) for _ in range(settings.tokenizer_texts)
    ]
    tok = build_tokenizer(
        texts,
        vocab_size=settings.vocab,
        max_length=settings.max_positions,
        literals=template_literals() if settings.literals else (),
    )
    prompts = Prompts(tok, templates, settings.max_positions)
    model = build_model(
        tok,
        hidden_size=settings.hidden,
        layers=settings.layers,
        heads=settings.heads,
        max_positions=settings.max_positions,
        seed=settings.seed,
    )
    model.to(settings.device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, settings))
    losses, window = [], []
    for step, rows in enumerate(step_stream(settings, prompts), start=1):
        inputs = step_tensors(rows, tok.pad_token_id)
        loss = model(**{k: t.to(settings.device) for k, t in inputs.items()}).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        window.append(loss.item())
        if step % 50 == 0 or step == settings.steps:
            losses.append([step, round(sum(window) / len(window), 4)])
            window = []
            if log is not None:
                log(f"step {step}/{settings.steps} loss {losses[-1][1]:.4f}")
    model.to("cpu").eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return losses


def _lr_factor(step: int, settings: Settings) -> float:
    """Linear warmup, then cosine decay to a tenth."""
    if step < settings.warmup:
        return (step + 1) / settings.warmup
    frac = (step - settings.warmup) / max(settings.steps - settings.warmup, 1)
    return 0.1 + 0.45 * (1 + math.cos(math.pi * min(frac, 1.0)))


def main(argv: list[str] | None = None) -> None:
    """Command line: pretrain (or find cached) the base model of a scale; print its path."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=".cache/testbed")
    parser.add_argument("--scale", choices=sorted(SCALES), default="packed-long")
    parser.add_argument("--steps", type=int, help="override the scale's step count")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), help="a different model; default: the scale's"
    )
    args = parser.parse_args(argv)
    settings = replace(SCALES[args.scale], seed=args.seed)
    if args.device:
        settings = replace(settings, device=args.device)
    if args.steps:
        settings = replace(settings, steps=args.steps)
    path = pretrain(args.out, settings, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(path)


if __name__ == "__main__":
    main()
