"""Testbed pretraining data: predicted share of positions, and time to build a step's rows.

    .venv/bin/python benchmarks/pretrain_data.py --steps 20 --workers 0,2

For the char-tagged scale (E), the same packed, and the gpu scale: predicted characters per step,
padded positions per step (rows padded to the longest, as training pads them) and their ratio,
over --steps steps; then wall milliseconds per step of `pretrain.step_stream` for the gpu scale
with each worker count (the data are the same for any count).
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import replace

from delift_ray.config import TemplatesConfig
from delift_ray.templates import Prompts
from delift_ray.testbed import pretrain
from delift_ray.tiny import build_tokenizer


def main() -> None:
    """Print the two tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--workers", default="0,2")
    args = parser.parse_args()
    gpu = pretrain.SCALES["gpu"]
    rng = random.Random(0)
    texts = [
        pretrain.item_text(pretrain.draw_item(gpu, rng), TemplatesConfig()) for _ in range(300)
    ]
    tok = build_tokenizer(texts, vocab_size=gpu.vocab, max_length=gpu.max_positions)
    prompts = Prompts(tok, TemplatesConfig(), gpu.max_positions)
    tagged = pretrain.SCALES["char-tagged"]
    print("| scale | predicted / step | padded positions / step | predicted share |")
    print("|---|---:|---:|---:|")
    for name, settings in (
        ("char-tagged (E)", tagged),
        ("char-tagged, packed", replace(tagged, pack=True)),
        ("gpu", gpu),
    ):
        predicted = positions = 0
        for step in range(args.steps):
            rows, masks = pretrain.step_rows(settings, prompts, random.Random(step))
            positions += max(len(r) for r in rows) * len(rows)
            predicted += sum(int(m.sum()) for m in masks)
        share = 100 * predicted / positions
        print(
            f"| {name} | {predicted / args.steps:.0f} | {positions / args.steps:.0f} | "
            f"{share:.1f}% |"
        )
    print("\n| gpu scale, workers | ms per step built |\n|---:|---:|")
    for workers in (int(w) for w in args.workers.split(",")):
        settings = replace(gpu, steps=64, workers=workers)
        started = time.perf_counter()
        built = sum(1 for _ in pretrain.step_stream(settings, prompts))
        print(f"| {workers} | {1000 * (time.perf_counter() - started) / built:.0f} |")


if __name__ == "__main__":
    main()
