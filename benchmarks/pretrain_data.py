"""Testbed pretraining data: how many of a step's positions are predicted, per scale.

    .venv/bin/python benchmarks/pretrain_data.py --steps 20

For the char-tagged scale (E, session 3), E's rows packed, and the packed scale (session 4:
the templates' fixed texts one token each, packed rows): predicted tokens per step, padded
positions per step (rows padded to the longest, as training pads them) and their ratio, over
--steps steps.
"""

from __future__ import annotations

import argparse
import random
from dataclasses import replace

from delift_ray.config import TemplatesConfig
from delift_ray.templates import Prompts
from delift_ray.testbed import pretrain
from delift_ray.tiny import build_tokenizer


def prompts_for(settings: pretrain.Settings) -> Prompts:
    """The scale's tokenizer (trained on 300 of its sequences) cut into scoring pieces."""
    rng = random.Random(0)
    texts = [
        pretrain.item_text(pretrain.draw_item(settings, rng), TemplatesConfig()) for _ in range(300)
    ]
    literals = pretrain.template_literals() if settings.literals else ()
    tok = build_tokenizer(texts, settings.vocab, settings.max_positions, literals)
    return Prompts(tok, TemplatesConfig(), settings.max_positions)


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    tagged = pretrain.SCALES["char-tagged"]
    print("| scale | predicted / step | padded positions / step | predicted share |")
    print("|---|---:|---:|---:|")
    for name, settings in (
        ("char-tagged (E)", tagged),
        ("char-tagged, packed", replace(tagged, pack=True)),
        ("packed", pretrain.SCALES["packed"]),
    ):
        prompts = prompts_for(settings)
        predicted = positions = 0
        for step in range(args.steps):
            rows = pretrain.step_rows(settings, prompts, random.Random(step))
            positions += max(len(r) for r in rows.ids) * len(rows.ids)
            predicted += sum(int(m.sum()) for m in rows.masks)
        share = 100 * predicted / positions
        print(
            f"| {name} | {predicted / args.steps:.0f} | {positions / args.steps:.0f} | "
            f"{share:.1f}% |"
        )


if __name__ == "__main__":
    main()
