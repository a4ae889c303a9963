"""Testbed pretraining data: how many of a step's positions are predicted, and how fast.

    .venv/bin/python benchmarks/pretrain_data.py --steps 20

For the char-tagged scale (E, session 3), E's rows packed, and the packed and packed-long scales
(session 4: the templates' fixed texts one token each, packed rows, each sequence attending to
itself): predicted tokens per step, padded positions per step (rows padded to the longest, as
training pads them), their ratio, and the wall seconds of a training step (forward, backward,
AdamW on the scale's model and thread count, data built beforehand) with the predicted tokens
per second that gives. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import replace

import torch

from delift_ray.config import TemplatesConfig
from delift_ray.models.tiny import build_model, build_tokenizer
from delift_ray.scoring.templates import Prompts
from delift_ray.testbed import pretrain


def prompts_for(settings: pretrain.Settings) -> Prompts:
    """The scale's tokenizer (trained on 300 of its sequences) cut into scoring pieces."""
    rng = random.Random(0)
    texts = [
        pretrain.item_text(pretrain.draw_item(settings, rng), TemplatesConfig()) for _ in range(300)
    ]
    literals = pretrain.template_literals() if settings.literals else ()
    tok = build_tokenizer(texts, settings.vocab, settings.max_positions, literals)
    return Prompts(tok, TemplatesConfig(), settings.max_positions)


def step_seconds(
    settings: pretrain.Settings, prompts: Prompts, steps: list[pretrain.Step]
) -> float:
    """Mean wall seconds of a training step over `steps` (after two warm-up steps)."""
    torch.set_num_threads(settings.threads)
    model = build_model(
        prompts.tokenizer, settings.hidden, settings.layers, settings.heads, settings.max_positions
    ).train()
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr)
    inputs = [pretrain.step_tensors(s, prompts.tokenizer.pad_token_id) for s in steps]
    for n, batch in enumerate(inputs):
        if n == 2:
            started = time.perf_counter()
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - started) / (len(inputs) - 2)


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    tagged = pretrain.SCALES["char-tagged"]
    print(
        "| scale | threads | predicted / step | padded positions / step | predicted share "
        "| s / step | predicted / s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, settings in (
        ("char-tagged (E)", tagged),
        ("char-tagged, packed", replace(tagged, pack=True)),
        ("packed", pretrain.SCALES["packed"]),
        ("packed-long", pretrain.SCALES["packed-long"]),
    ):
        prompts = prompts_for(settings)
        steps = [pretrain.step_rows(settings, prompts, random.Random(s)) for s in range(args.steps)]
        positions = sum(max(len(r) for r in s.ids) * len(s.ids) for s in steps) / args.steps
        predicted = sum(int(m.sum()) for s in steps for m in s.masks) / args.steps
        seconds = step_seconds(settings, prompts, steps)
        print(
            f"| {name} | {settings.threads} | {predicted:.0f} | {positions:.0f} | "
            f"{100 * predicted / positions:.1f}% | {seconds:.3f} | {predicted / seconds:,.0f} |"
        )


if __name__ == "__main__":
    main()
