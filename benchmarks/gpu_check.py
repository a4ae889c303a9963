"""GPU check of utility scoring (issue 13 part 6): what users get on Qwen2-shaped models.

Every GPU figure the project reports comes from this one script. For each shape (Qwen2-0.5B:
hidden 896, 24 layers, 14 query / 2 key-value heads, MLP 4864, vocabulary 151,936, tied
embeddings; Qwen2-1.5B: hidden 1536, 28 layers, 12 / 2 heads, MLP 8960) it writes a random
checkpoint in bf16 and loads it as production loads it (`models.load.load_model`, dtype at
load), then:

1. Correctness gate (0.5B shape, float32 load of the same checkpoint, distance cpmi): the
   final norm is scaled so p_t is far from uniform; the default path's cpmi must equal an
   unpadded one-pair-at-a-time reference to `--tolerance` x the mean cpmi, and showing a
   target a wrong demonstration must move the reference by more than 20x that limit.
2. Throughput in bf16: the default scoring settings, packed rows of 512 / 2048 / 8192 tokens,
   and the unshared padded path, on the same kNN-like pairs (each demonstration, ~200 tokens,
   shown to many targets whose query and response add ~60). Per run: pairs/s, real tokens/s,
   the fraction of the device's dense bf16 peak, peak memory, and the speed-up per pair over
   the unshared path.

FLOPs per forward are counted from what the model is fed (on a tiny stand-in with the same
tokenizer and packing, so counting costs the GPU nothing): 2 x (parameters outside the
embedding) x real tokens, plus 4 x layers x attention width x attended (query, key) pairs,
plus 2 x hidden x vocabulary for each position whose logits are computed. The peak is
$PEAK_TFLOPS, else the table entry for the exact device name. Nothing is downloaded. With $OUT
set, the figures also go to $OUT/gpu_check.json. From the repository root:

    bash benchmarks/gpu_check.sh            # CUDA; about 3 minutes on an H200
    bash benchmarks/gpu_check.sh --smoke    # a tiny Qwen2 on the CPU, to check the script
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from delift_ray.config import ModelConfig, ScoringConfig, TemplatesConfig
from delift_ray.models.load import load_model
from delift_ray.models.tiny import build_tokenizer
from delift_ray.scoring.templates import EncodedSet
from delift_ray.scoring.utility_model import UtilityModel

# dense bf16 tensor-core peak, TFLOP/s, by the exact name torch.cuda.get_device_name() gives
PEAK_BF16_TFLOPS = {
    "NVIDIA H200": 989.0,
    "NVIDIA H200 NVL": 835.0,
    "NVIDIA H100 80GB HBM3": 989.0,
    "NVIDIA H100 PCIe": 756.0,
    "NVIDIA H100 NVL": 835.0,
    "NVIDIA A100-SXM4-80GB": 312.0,
    "NVIDIA A100-SXM4-40GB": 312.0,
    "NVIDIA A100 80GB PCIe": 312.0,
    "NVIDIA A100-PCIE-40GB": 312.0,
    "NVIDIA L40S": 362.0,
    "NVIDIA L4": 121.0,
}
QWEN2 = {"vocab_size": 151936, "tie_word_embeddings": True, "rope_theta": 1e6}
SHAPES = {
    "qwen2-0.5b": {
        "hidden_size": 896,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "intermediate_size": 4864,
        **QWEN2,
    },
    "qwen2-1.5b": {
        "hidden_size": 1536,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "intermediate_size": 8960,
        **QWEN2,
    },
}
SMOKE = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "tie_word_embeddings": True,
}
STAND_IN = {**SMOKE, "hidden_size": 16, "num_hidden_layers": 1, "intermediate_size": 16}
SHARPEN = 30.0  # the final norm's scale in the gate's checkpoint: logits far from uniform


@dataclass
class Work:
    """What a scoring run feeds the model: real tokens, attended pairs, logit positions."""

    tokens: int = 0
    attended: int = 0
    logits: int = 0

    def flops(self, config: Any, matmul_params: int) -> float:
        """2 x non-embedding parameters x tokens + attention + the LM head where computed."""
        width = config.num_attention_heads * (config.hidden_size // config.num_attention_heads)
        return (
            2.0 * matmul_params * self.tokens
            + 4.0 * config.num_hidden_layers * width * self.attended
            + 2.0 * config.hidden_size * config.vocab_size * self.logits
        )


@dataclass
class Pairs:
    """The scored pairs: targets, demonstrations and (i, j) indices."""

    targets: EncodedSet
    demos: EncodedSet
    i: np.ndarray
    j: np.ndarray


def words(n: int, seed: int) -> list[str]:
    """n distinct pronounceable pseudo-words."""
    rng = np.random.default_rng(seed)
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    out: set[str] = set()
    while len(out) < n:
        out.add("".join(rng.choice(syllables, size=rng.integers(2, 4))))
    return sorted(out)


def texts(
    n: int, prompt_words: int, response_words: int, vocab: list[str], rng: np.random.Generator
) -> tuple[list[str], list[str]]:
    """n synthetic (prompt x, response y) examples of about the given numbers of words."""

    def say(k: int) -> str:
        return " ".join(rng.choice(vocab, size=int(rng.integers(k // 2, k * 3 // 2 + 1))))

    xs = [f"Instruction: {say(8)}.\nInput: {say(prompt_words)}\n" for _ in range(n)]
    return xs, [" " + say(response_words) for _ in range(n)]


def checkpoint(tokenizer, shape: dict[str, Any], device: str, sharpen: float, path: Path) -> None:
    """Write a random Qwen2 of `shape` in bf16 (float32 for the smoke run) with its tokenizer."""
    torch.manual_seed(0)
    config = Qwen2Config(
        **{"vocab_size": len(tokenizer), **shape},
        max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    with torch.device(device):
        model = Qwen2ForCausalLM(config).to(dtype)
    with torch.no_grad():
        model.model.norm.weight.mul_(sharpen)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    del model


def scorer(loaded, scoring: ScoringConfig) -> UtilityModel:
    """The product's scorer on a loaded model."""
    return UtilityModel(
        loaded.model,
        loaded.tokenizer,
        TemplatesConfig(),
        scoring,
        loaded.max_length,
        device=loaded.device,
    )


def count_work(stand_in, tokenizer, scoring: ScoringConfig, pairs: Pairs) -> Work:
    """Run the pairs through a tiny CPU model with the same packing, counting what it is fed."""
    work = Work()

    def hook(_module, _args, kw):
        ids, mask = kw["input_ids"], kw.get("attention_mask")
        if isinstance(mask, dict):
            mask = next(iter(mask.values()))
        if mask is not None and mask.dim() == 4:  # packed row: the mask says who attends whom
            work.tokens += ids.numel()
            work.attended += int((mask if mask.dtype == torch.bool else mask == 0).sum())
        else:  # padded batch: causal attention within each row's real tokens
            lengths = mask.sum(1) if mask is not None else torch.full((len(ids),), ids.shape[1])
            work.tokens += int(lengths.sum())
            work.attended += int((lengths * (lengths + 1) // 2).sum())

    def head_hook(module, args):  # positions whose logits are computed, whatever selects them
        work.logits += args[0].numel() // module.in_features

    model = UtilityModel(stand_in, tokenizer, TemplatesConfig(), scoring, 4096, device="cpu")
    handles = [
        stand_in.register_forward_pre_hook(hook, with_kwargs=True),
        stand_in.get_output_embeddings().register_forward_pre_hook(head_hook),
    ]
    try:
        model.pairs(pairs.targets, pairs.demos, pairs.i, pairs.j)
    finally:
        for handle in handles:
            handle.remove()
    return work


@torch.inference_mode()
def reference_cpmi(loaded, prompts, pairs: Pairs, ks: np.ndarray, j: np.ndarray) -> np.ndarray:
    """cpmi of target i[k] shown demonstration j[k]: one unpadded forward per pair."""
    out = []
    for k in ks:
        t = int(pairs.i[k])
        prompt, _ = prompts.pair_prompts(pairs.targets, pairs.i[[k]], pairs.demos, j[[k]])
        ids = prompts.pair_sequence(pairs.targets, t, prompt[0])
        n = len(pairs.targets.response[t]) + 1
        x = torch.as_tensor(ids[None].astype(np.int64), device=loaded.device)
        logp = loaded.model(input_ids=x).logits[0, -n - 1 : -1].float().log_softmax(-1)
        gold = x[0, -n:]
        out.append(-float(logp.gather(1, gold[:, None]).mean()))
    return np.array(out)


def gate(loaded, pairs: Pairs, n_check: int, tolerance: float) -> dict[str, float]:
    """cpmi of the default path vs the reference, and how far a wrong demonstration moves it."""
    product = scorer(loaded, ScoringConfig(distance="cpmi"))
    ks = np.arange(min(n_check, len(pairs.i)))
    got = product.pairs(pairs.targets, pairs.demos, pairs.i[ks], pairs.j[ks])
    ref = reference_cpmi(loaded, product.prompts, pairs, ks, pairs.j)
    wrong = reference_cpmi(loaded, product.prompts, pairs, ks, (pairs.j + 1) % len(pairs.demos))
    limit = tolerance * max(1.0, float(np.abs(ref).mean()))  # float32 error grows with |cpmi|
    result = {
        "pairs": len(ks),
        "max_gap": float(np.abs(got - ref).max()),
        "limit": limit,
        "median_wrong_demo_shift": float(np.median(np.abs(wrong - ref))),
        "mean_cpmi": float(ref.mean()),
    }
    print(
        f"gate (float32, cpmi, {len(ks)} pairs, mean {result['mean_cpmi']:.2f} nats): "
        f"max |default - reference| = {result['max_gap']:.2e} (limit {limit:.1e}); a wrong "
        f"demonstration moves the reference by {result['median_wrong_demo_shift']:.3g} "
        f"(median; must exceed 20 x the limit)"
    )
    if result["max_gap"] > limit:
        raise SystemExit("FAILED: the default scoring path disagrees with the reference")
    if result["median_wrong_demo_shift"] <= 20 * limit:
        raise SystemExit("FAILED: the gate cannot discriminate (a wrong context barely matters)")
    return result


def peak_tflops(device: str) -> tuple[float | None, str]:
    """The peak dense bf16 TFLOP/s and where it came from ($PEAK_TFLOPS or the table)."""
    if os.environ.get("PEAK_TFLOPS"):
        return float(os.environ["PEAK_TFLOPS"]), "$PEAK_TFLOPS"
    if device != "cuda":
        return None, "none on CPU"
    name = torch.cuda.get_device_name()
    if name in PEAK_BF16_TFLOPS:
        return PEAK_BF16_TFLOPS[name], f"table entry for {name!r}"
    return None, f"{name!r} not in the table; set PEAK_TFLOPS"


def settings(smoke: bool) -> dict[str, ScoringConfig]:
    """The runs to time: the defaults, larger packed rows, and the unshared padded path."""
    base = ScoringConfig()
    runs = {f"default (packed {base.packed_row_tokens})": base}
    for tokens in () if smoke else (512, 2048, 8192):
        runs[f"packed {tokens}"] = replace(base, packed_row_tokens=tokens)
    runs["unshared (padded 8192 / 64)"] = replace(base, prefix_sharing=False)
    if not smoke:
        runs["unshared (padded 32768 / 256)"] = replace(
            base, prefix_sharing=False, max_batch_tokens=32768, max_batch_size=256
        )
    return runs


def sync(device: str) -> None:
    """Wait for the device (a no-op on the CPU)."""
    if device == "cuda":
        torch.cuda.synchronize()


def throughput(loaded, stand_in, pairs: Pairs, smoke: bool) -> list[dict[str, Any]]:
    """Time every setting on the same pairs; one row of figures each."""
    params = sum(p.numel() for p in loaded.model.parameters())
    matmul = params - loaded.model.get_input_embeddings().weight.numel()
    peak, source = peak_tflops(loaded.device)
    print(f"parameters {params:,} ({matmul:,} outside the embedding); peak {peak} ({source})")
    print("| run | pairs/s | real tokens/s | TFLOP/s | of bf16 peak | peak GiB | vs unshared |")
    print("|---|---|---|---|---|---|---|")
    rows: list[dict[str, Any]] = []
    for name, scoring in settings(smoke).items():
        product = scorer(loaded, scoring)
        product.pairs(pairs.targets, pairs.demos, pairs.i[:64], pairs.j[:64])  # warm-up
        sync(loaded.device)
        if loaded.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        product.pairs(pairs.targets, pairs.demos, pairs.i, pairs.j)  # numpy out: synchronised
        seconds = time.perf_counter() - start
        work = count_work(stand_in, loaded.tokenizer, scoring, pairs)
        tflops = work.flops(loaded.model.config, matmul) / seconds / 1e12
        mem = torch.cuda.max_memory_allocated() / 2**30 if loaded.device == "cuda" else None
        rows.append(
            {
                "run": name,
                "seconds": seconds,
                "pairs_per_s": len(pairs.i) / seconds,
                "tokens_per_s": work.tokens / seconds,
                "tflops": tflops,
                "of_peak": tflops / peak if peak else None,
                "peak_gib": mem,
                **asdict(work),
            }
        )
    unshared = min(r["seconds"] for r in rows if r["run"].startswith("unshared"))
    for r in rows:
        r["speedup_vs_unshared"] = unshared / r["seconds"]
        share = f"{r['of_peak']:.1%}" if r["of_peak"] is not None else "n/a"
        mem = f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else "n/a"
        print(
            f"| {r['run']} | {r['pairs_per_s']:.0f} | {r['tokens_per_s']:.0f} | "
            f"{r['tflops']:.3g} | {share} | {mem} | {r['speedup_vs_unshared']:.2f}x |"
        )
    return rows


def synthetic(args: argparse.Namespace) -> tuple[Any, list[str], list[str], np.ndarray, np.ndarray]:
    """A tokenizer, texts (targets first, then demonstrations) and kNN-like pair indices."""
    rng = np.random.default_rng(0)
    vocab = words(400, seed=0)
    xs, ys = texts(args.per_demo * 4, 30, 12, vocab, rng)  # targets: suffix ~60 tokens
    dxs, dys = texts(args.demos, 105, 40, vocab, rng)  # demonstrations: prefix ~200 tokens
    templates = TemplatesConfig()
    corpus = [*vocab * 3, *[templates.plain, templates.with_example] * 20]
    corpus += [x + y for x, y in zip(xs + dxs, ys + dys, strict=True)]
    tokenizer = build_tokenizer(corpus, vocab_size=2048, max_length=4096)
    j = np.repeat(np.arange(args.demos), args.per_demo)
    i = np.concatenate(
        [rng.choice(len(xs), args.per_demo, replace=False) for _ in range(args.demos)]
    )
    return tokenizer, xs + dxs, ys + dys, i, j


def main() -> None:
    """Gate, then time every shape; print tables and write $OUT/gpu_check.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny Qwen2 on the CPU")
    parser.add_argument("--demos", type=int, help="demonstrations (default 64; smoke 4)")
    parser.add_argument("--per-demo", type=int, help="targets per demo (default 48; smoke 8)")
    parser.add_argument("--check-pairs", type=int, default=48, help="pairs in the gate")
    parser.add_argument(
        "--tolerance", type=float, default=1e-4, help="gate's limit, relative to mean cpmi"
    )
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma list of shapes")
    args = parser.parse_args()
    args.demos = args.demos or (4 if args.smoke else 64)
    args.per_demo = args.per_demo or (8 if args.smoke else 48)
    if args.smoke:
        device, shapes = "cpu", {"smoke": SMOKE}
        torch.set_num_threads(1)
    elif torch.cuda.is_available():
        device, shapes = "cuda", {s: SHAPES[s] for s in args.shapes.split(",")}
        torch.backends.cuda.matmul.allow_tf32 = False  # the float32 gate means float32
    else:
        raise SystemExit("no CUDA device: run on a GPU machine, or with --smoke on the CPU")
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(f"device: {name}; torch {torch.__version__}")

    tokenizer, all_x, all_y, i, j = synthetic(args)
    n_targets = args.per_demo * 4
    stand_in_config = Qwen2Config(
        **{**STAND_IN, "vocab_size": len(tokenizer)}, max_position_embeddings=4096
    )
    stand_in = Qwen2ForCausalLM(stand_in_config).eval()
    report: dict[str, Any] = {"device": name, "torch": torch.__version__, "shapes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for k, (shape_name, shape) in enumerate(shapes.items()):
            path = Path(tmp) / shape_name
            built = time.perf_counter()
            checkpoint(tokenizer, shape, device, SHARPEN, path)
            dtype = "float32" if device == "cpu" else "bfloat16"
            loaded = load_model(ModelConfig(path=str(path), dtype=dtype, device=device))
            enc = scorer(loaded, ScoringConfig()).encode(all_x, all_y)
            everything = list(range(len(all_x)))
            pairs = Pairs(enc.take(everything[:n_targets]), enc.take(everything[n_targets:]), i, j)
            print(f"\n## {shape_name} ({time.perf_counter() - built:.0f} s to write and load)")
            entry: dict[str, Any] = {"pairs": len(pairs.i)}
            if k == 0:
                full = load_model(ModelConfig(path=str(path), dtype="float32", device=device))
                entry["gate"] = gate(full, pairs, args.check_pairs, args.tolerance)
                del full
            entry["runs"] = throughput(loaded, stand_in, pairs, args.smoke)
            report["shapes"][shape_name] = entry
            del loaded
            if device == "cuda":
                torch.cuda.empty_cache()
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_check.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
