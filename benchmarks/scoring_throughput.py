"""Utility-scoring throughput: naive per-pair loop vs batched vs batched + prefix sharing.

On one model and one set of (target, demonstration) pairs from the demo pool, three runs of
UtilityModel.pairs: (a) naive, one forward pass per pair (max_batch_size 1, no sharing);
(b) batched, prefix sharing off; (c) batched with prefix sharing. Pairs are kNN-like: each of
`--demos` demonstrations is shown to `--per-demo` random other pool examples, as a pairs block
of the pipeline holds them. Two random-weight float32 Llamas: the demo-size one (hidden 64,
2 layers) and a larger one (hidden 512, 8 layers, 34M parameters) where the forward pass, not
Python, dominates.

Rates are per CPU second of this process (torch on `--threads` 1): on a shared machine wall
time mostly measures the neighbours' load; wall seconds and wall speed-ups are shown too.
"tokens" are the tokens of the scored sequences (prefix + suffix of every pair), the same
numerator for the three runs; "model tokens" are those each run feeds the model. Prints a
Markdown table and the command; with --results, also puts it in that Markdown file as the
section "Scoring throughput (issue 3)". Run from the repository root:

    .venv/bin/python benchmarks/scoring_throughput.py --results benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import re
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from delift_ray.config import DataConfig, ScoringConfig, TemplatesConfig
from delift_ray.data.read import read_examples
from delift_ray.models.tiny import build_model, build_tokenizer
from delift_ray.scoring.templates import EncodedSet
from delift_ray.scoring.utility_model import UtilityModel

SECTION = "## Scoring throughput (issue 3)"
MODES = {
    "(a) naive: 1 pair / forward": {"max_batch_size": 1, "prefix_sharing": False},
    "(b) batched": {"prefix_sharing": False},
    "(c) batched + prefix sharing": {"prefix_sharing": True},
}


@dataclasses.dataclass
class Run:
    """One mode's wall and CPU seconds, its d1 values and how many tokens it fed the model."""

    wall: float
    cpu: float
    d1: np.ndarray
    model_tokens: int


def large_llama(tokenizer, seed: int = 0) -> LlamaForCausalLM:
    """A random ~30M-parameter Llama (hidden 512, 8 layers, 8 heads, MLP 2048)."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=512,
        intermediate_size=2048,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=8,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval()


def knn_like_pairs(n: int, demos: int, per_demo: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(i, j): each of `demos` random demonstrations j shown to `per_demo` other targets i."""
    rng = np.random.default_rng(seed)
    j = np.repeat(rng.choice(n, size=demos, replace=False), per_demo)
    i = np.concatenate(
        [rng.choice(np.delete(np.arange(n), d), per_demo, replace=False) for d in j[::per_demo]]
    )
    return i, j


def sequences(scorer: UtilityModel, enc: EncodedSet, i: np.ndarray, j: np.ndarray) -> list:
    """The scored token sequence of each pair, as a plain per-pair loop builds it."""
    prompts, _ = scorer.prompts.pair_prompts(enc, i, enc, j)
    return [scorer.prompts.pair_sequence(enc, int(a), p) for a, p in zip(i, prompts)]


def perfect_share(seqs: list, j: np.ndarray) -> int:
    """Tokens a perfect prefix share feeds: per demonstration, the longest prefix its pairs
    have in common once, then each pair's remaining tokens."""
    total = 0
    for b in np.unique(j):
        group = [seqs[k] for k in np.flatnonzero(j == b)]
        common = 0
        while all(len(q) > common and q[common] == group[0][common] for q in group):
            common += 1
        total += common + sum(len(q) - common for q in group)
    return total


def measure(scorer: UtilityModel, enc: EncodedSet, i: np.ndarray, j: np.ndarray) -> Run:
    """Score the pairs after a warm-up on the first few, counting the tokens fed to the model."""
    scorer.pairs(enc, enc, i[:4], j[:4])
    fed = []
    hook = scorer.model.register_forward_pre_hook(
        lambda _m, _a, kw: fed.append(int(kw["input_ids"].numel())), with_kwargs=True
    )
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        d1 = scorer.pairs(enc, enc, i, j)
        return Run(time.perf_counter() - wall, time.process_time() - cpu, d1, sum(fed))
    finally:
        hook.remove()


def bench(
    name: str, model, tokenizer, xs: list[str], ys: list[str], demos: int, args: argparse.Namespace
) -> tuple[list[str], str]:
    """Markdown table rows of the three modes on one model, and a line describing the pairs."""
    base = ScoringConfig(
        max_batch_tokens=args.max_batch_tokens,
        max_batch_size=args.max_batch_size,
        packed_row_tokens=args.packed_row_tokens,
    )
    scorers = [
        UtilityModel(
            model, tokenizer, TemplatesConfig(), dataclasses.replace(base, **kw), args.max_length
        )
        for kw in MODES.values()
    ]
    enc = scorers[0].encode(xs, ys)
    i, j = knn_like_pairs(len(xs), demos, args.per_demo, args.seed)
    seqs = sequences(scorers[0], enc, i, j)
    if scorers[0].prompts.pair_prompts(enc, i, enc, j)[1].any():
        raise SystemExit(f"--max-length {args.max_length} cuts some demonstrations; raise it")
    tokens = sum(len(q) for q in seqs)
    perfect = perfect_share(seqs, j)
    about = (
        f"{name}: {len(i)} pairs ({demos} demonstrations x {args.per_demo} targets); mean "
        f"sequence {tokens / len(i):.0f} tokens; a perfect prefix share feeds {perfect} tokens, "
        f"so the token-count ceiling of (c)/(a) is {tokens / perfect:.2f}x"
    )
    print(about, flush=True)
    runs = [measure(scorer, enc, i, j) for scorer in scorers]
    label = f"{name}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params"
    rows = [
        f"| {label} | {mode} | {len(i)} | {run.model_tokens} | {run.wall:.1f} | {run.cpu:.1f} | "
        f"{len(i) / run.cpu:.1f} | {tokens / run.cpu:.0f} | "
        f"{np.abs(run.d1 - runs[0].d1).max():.0e} |"
        for mode, run in zip(MODES, runs)
    ]
    a, b, c = runs
    ratios = [
        f"{what} **{slow.cpu / fast.cpu:.1f}x** (wall {slow.wall / fast.wall:.1f}x)"
        for what, slow, fast in (("(b)/(a)", a, b), ("(c)/(a)", a, c), ("(c)/(b)", b, c))
    ]
    ceiling = tokens / perfect
    speedup = a.cpu / c.cpu
    against = (
        f"| {label} | (c) against the ceiling | model tokens **{c.model_tokens / perfect:.2f}x** "
        f"a perfect share | (c)/(a) CPU {speedup:.2f}x of the {ceiling:.2f}x ceiling = "
        f"**{speedup / ceiling:.2f}** | | | | | |"
    )
    return [*rows, f"| {label} | speed-ups | {' | '.join(ratios)} | | | | |", against], about


def write_section(path: Path, text: str) -> None:
    """Put `text` in `path` as this benchmark's section: replace an old one or append."""
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    pattern = re.compile(re.escape(SECTION) + r"\n.*?(?=^## |\Z)", re.S | re.M)
    new = (
        pattern.sub(lambda _: text, old)
        if pattern.search(old)
        else old.rstrip("\n") + "\n\n" + text
    )
    path.write_text(new)


def main() -> None:
    """Build the models and pairs, time the three modes on each, print (and write) the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", default="pipelines/data/demo_pool.jsonl")
    parser.add_argument("--demos", type=int, default=40, help="demonstrations, tiny model")
    parser.add_argument("--per-demo", type=int, default=32, help="targets per demonstration")
    parser.add_argument("--large-demos", type=int, default=4, help="demonstrations, large model")
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--max-batch-tokens", type=int, default=8192)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--packed-row-tokens", type=int, default=ScoringConfig.packed_row_tokens)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, help="also write the section to this Markdown file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    examples = read_examples(DataConfig(path=args.pool)).examples
    xs, ys = [e.x for e in examples], [e.y for e in examples]
    tokenizer = build_tokenizer(
        [x + y for x, y in zip(xs, ys)], vocab_size=512, max_length=args.max_length
    )
    command = shlex.join([os.path.relpath(sys.executable), *sys.argv])
    tiny = build_model(tokenizer, max_positions=args.max_length)
    tiny_rows, tiny_about = bench("tiny Llama h64 x2", tiny, tokenizer, xs, ys, args.demos, args)
    large = large_llama(tokenizer)
    large_rows, large_about = bench(
        "Llama h512 x8", large, tokenizer, xs, ys, args.large_demos, args
    )
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores (shared), torch {torch.__version__}, "
        f"{args.threads} thread(s)"
    )
    text = "\n".join(
        [
            SECTION,
            "",
            f"Command: `{command}`  ",
            f"Date: {datetime.date.today().isoformat()}; machine: {machine}.",
            f"Pool: {args.pool} ({len(xs)} examples); random-weight float32 models; "
            f"max_batch_tokens {args.max_batch_tokens}, max_batch_size {args.max_batch_size}.",
            "",
            "| model | mode | pairs | model tokens | wall s | CPU s | pairs/s | tokens/s | "
            "max abs d1 - (a) |",
            "|---|---|---|---|---|---|---|---|---|",
            *tiny_rows,
            *large_rows,
            "",
            f"Pairs: {tiny_about}. {large_about}.",
            "",
            "pairs/s and tokens/s are per CPU second of the benchmark process (torch on one "
            "thread): other jobs share this machine's 2 cores, so wall time mostly measures their "
            "load; wall seconds and wall speed-ups are shown for completeness. tokens = the "
            "scored sequences' tokens (same numerator for every mode); model tokens = the "
            "tokens each mode feeds the model. The last column is the largest difference from "
            "(a)'s d1 (float32).",
            "",
        ]
    )
    print("\n" + text)
    if args.results:
        write_section(args.results, text)


if __name__ == "__main__":
    main()
