"""The demo's tiny model: a byte-level BPE tokenizer and a small Llama, trained in code in ~1 min.

It is trained on the demo pool rendered with the scoring templates: plain, and with an example
of the same kind (the pool's `kind` column) or, half as often, of a random kind. So it learns
that a same-kind demonstration helps, and utilities carry signal a selection can use.
Cached: a second call with the same data and settings returns the saved directory.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path
from typing import Any

from delift_ray.config import EXAMPLE_TEMPLATE, PLAIN_TEMPLATE, DataConfig
from delift_ray.data.read import read_examples
from delift_ray.models.tiny import build_model, build_tokenizer

SETTINGS: dict[str, Any] = {
    "steps": 400,
    "batch": 16,
    "lr": 3e-3,
    "hidden": 64,
    "layers": 2,
    "seed": 0,
    "v": 2,
}


def ensure_demo_model(out_dir: str | Path, data_path: str | Path) -> Path:
    """Build and train the demo model into out_dir unless an identical one is cached there."""
    out = Path(out_dir)
    data = Path(data_path).read_bytes()
    stamp = hashlib.sha256(data + json.dumps(SETTINGS).encode()).hexdigest()[:16]
    stamp_file = out / "demo-model.stamp"
    if stamp_file.exists() and stamp_file.read_text().strip() == stamp:
        return out
    pool = read_examples(DataConfig(path=str(data_path)))
    pairs = [(e.x, e.y, str(e.record.get("kind", ""))) for e in pool.examples]
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    _train(pairs, tmp)
    (tmp / "demo-model.stamp").write_text(stamp + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def _texts(rows: list[tuple[str, str, str]], rng: random.Random) -> list[tuple[str, str]]:
    """Training (prompt, response) texts: plain, with a same-kind example, with a random one."""
    by_kind: dict[str, list[tuple[str, str, str]]] = {}
    for row in rows:
        by_kind.setdefault(row[2], []).append(row)
    out = []
    for x, y, kind in rows:
        out.append((PLAIN_TEMPLATE.format(query=x), y))
        for pool in (by_kind[kind], by_kind[kind], rows):
            ex, ey, _ = rng.choice(pool)
            prompt = EXAMPLE_TEMPLATE.format(example_prompt=ex, example_response=ey, query=x)
            out.append((prompt, y))
    return out


def _train(pairs: list[tuple[str, str, str]], out: Path) -> None:
    import torch

    torch.set_num_threads(1)  # tiny matrices: extra threads only contend (and vary results)
    rng = random.Random(SETTINGS["seed"])
    texts = _texts(pairs, rng)
    tok = build_tokenizer([p + r for p, r in texts], vocab_size=512, max_length=512)
    model = build_model(
        tok, hidden_size=SETTINGS["hidden"], layers=SETTINGS["layers"], seed=SETTINGS["seed"]
    )
    eos = tok.eos_token_id
    seqs = [
        tok(p, add_special_tokens=False)["input_ids"]
        + [eos]
        + tok(r, add_special_tokens=False)["input_ids"]
        + [eos]
        for p, r in texts
    ]
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=SETTINGS["lr"])
    torch.manual_seed(SETTINGS["seed"])
    for _ in range(SETTINGS["steps"]):
        batch = rng.sample(seqs, SETTINGS["batch"])
        width = max(len(s) for s in batch)
        ids = torch.full((len(batch), width), tok.pad_token_id)
        mask = torch.zeros_like(ids)
        for b, s in enumerate(batch):
            ids[b, : len(s)] = torch.tensor(s)
            mask[b, : len(s)] = 1
        labels = ids.masked_fill(mask == 0, -100)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
