"""GPU check of utility scoring (issue 3): a ~0.5B random Llama, prefix sharing on and off.

Builds a Llama-style config with random weights (hidden 1024, 24 layers, 16 heads, MLP 4096,
vocabulary 32000: 0.47B parameters; the exact count is printed), synthetic prompts of realistic
length (a demonstration's prefix ~200 tokens, a target's suffix ~60) and a few thousand
(target, demonstration) pairs, kNN-like: each demonstration shown to many targets. Then

1. float32: d1 of a subset with prefix sharing on and off must agree to 1e-4;
2. bfloat16: UtilityModel.pairs on every pair, sharing on and off, with tokens/s, pairs/s,
   the fraction of the GPU's peak dense bf16 FLOP/s reached and the peak GPU memory.

FLOPs are estimated as 2 x (parameters - input embedding) x tokens fed to the model (real
tokens, not padding; attention's quadratic term not counted). The peak comes from
$PEAK_TFLOPS, else from a small table by device name. `--smoke` runs a tiny float32 model on
the CPU, to check the script itself anywhere. Nothing is downloaded. From the repository root:

    bash benchmarks/gpu_check.sh            # CUDA, well under 5 minutes on an H200
    bash benchmarks/gpu_check.sh --smoke    # CPU, tiny
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from scoring_throughput import perfect_share  # benchmarks/, run as a script
from transformers import LlamaConfig, LlamaForCausalLM

from delift_ray.config import ScoringConfig, TemplatesConfig
from delift_ray.models.tiny import build_tokenizer
from delift_ray.scoring.templates import EncodedSet
from delift_ray.scoring.utility_model import UtilityModel

# dense bf16 tensor-core peak in TFLOP/s; the first name contained in the device's name wins
PEAK_BF16_TFLOPS = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
)
FULL = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16}
SMOKE = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}


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


def llama(tokenizer, shape: dict[str, int], vocab_size: int, device: str) -> LlamaForCausalLM:
    """A random float32 Llama of the given shape (MLP 4 x hidden), built on `device`."""
    torch.manual_seed(0)
    config = LlamaConfig(
        **shape,
        num_key_value_heads=shape["num_attention_heads"],
        intermediate_size=4 * shape["hidden_size"],
        vocab_size=vocab_size,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    with torch.device(device):
        return LlamaForCausalLM(config).eval()


def peak_tflops(device: str) -> tuple[float | None, str]:
    """The peak dense bf16 TFLOP/s and where it came from ($PEAK_TFLOPS or the table)."""
    if os.environ.get("PEAK_TFLOPS"):
        return float(os.environ["PEAK_TFLOPS"]), "$PEAK_TFLOPS"
    if device != "cuda":
        return None, "none on CPU"
    name = torch.cuda.get_device_name()
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in name:
            return tflops, f"table entry {key!r} for {name!r}"
    return None, f"{name!r} not in the table; set PEAK_TFLOPS"


def fed_tokens(scorer: UtilityModel, t: EncodedSet, d: EncodedSet, i, j, shared: bool) -> int:
    """Real tokens the model is fed: whole sequences, or a perfect prefix share."""
    prompts, _ = scorer.prompts.pair_prompts(t, i, d, j)
    seqs = [scorer.prompts.pair_sequence(t, int(a), p) for a, p in zip(i, prompts)]
    return perfect_share(seqs, j) if shared else sum(len(q) for q in seqs)


def scorers(model, tokenizer, args: argparse.Namespace, device: str) -> list[UtilityModel]:
    """Scorers with prefix sharing on and off, on one model."""
    return [
        UtilityModel(
            model,
            tokenizer,
            TemplatesConfig(),
            ScoringConfig(
                max_batch_tokens=args.max_batch_tokens,
                max_batch_size=args.max_batch_size,
                prefix_sharing=shared,
            ),
            args.max_length,
            device=device,
        )
        for shared in (True, False)
    ]


def main() -> None:
    """Build the model and pairs, check float32 agreement, time bf16 scoring, print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny float32 model on the CPU")
    parser.add_argument("--demos", type=int, help="demonstrations (default 64; smoke 4)")
    parser.add_argument("--per-demo", type=int, help="targets per demo (default 48; smoke 8)")
    parser.add_argument("--max-batch-tokens", type=int, default=32768)
    parser.add_argument("--max-batch-size", type=int, default=256)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--check-pairs", type=int, default=128, help="pairs checked in float32")
    args = parser.parse_args()
    demos = args.demos or (4 if args.smoke else 64)
    per_demo = args.per_demo or (8 if args.smoke else 48)
    if args.smoke:
        device, shape, vocab_size, dtype = "cpu", SMOKE, 0, torch.float32
        torch.set_num_threads(1)
    elif torch.cuda.is_available():
        device, shape, vocab_size, dtype = "cuda", FULL, 32000, torch.bfloat16
    else:
        raise SystemExit("no CUDA device: run on a GPU machine, or with --smoke on the CPU")

    rng = np.random.default_rng(0)
    vocab = words(400, seed=0)
    xs, ys = texts(per_demo * 4, 30, 12, vocab, rng)  # targets: suffix ~60 tokens
    dxs, dys = texts(demos, 105, 40, vocab, rng)  # demonstrations: prefix ~200 tokens
    templates = TemplatesConfig()
    corpus = [*vocab * 3, *[templates.plain, templates.with_example] * 20]
    corpus += [x + y for x, y in zip(xs + dxs, ys + dys)]
    tokenizer = build_tokenizer(corpus, vocab_size=2048, max_length=args.max_length)
    model = llama(tokenizer, shape, vocab_size or len(tokenizer), device)
    params = sum(p.numel() for p in model.parameters())
    matmul = params - model.get_input_embeddings().weight.numel()
    print(f"device: {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}; {shape}")
    print(f"parameters: {params:,} ({matmul:,} outside the input embedding)")

    shared_scorer, plain_scorer = scorers(model, tokenizer, args, device)
    targets = shared_scorer.encode(xs, ys)
    demo_set = shared_scorer.encode(dxs, dys)
    j = np.repeat(np.arange(demos), per_demo)
    i = np.concatenate([rng.choice(len(xs), per_demo, replace=False) for _ in range(demos)])
    if shared_scorer.prompts.pair_prompts(targets, i, demo_set, j)[1].any():
        raise SystemExit("some demonstrations are cut: raise --max-length")
    unshared = fed_tokens(shared_scorer, targets, demo_set, i, j, shared=False)
    print(
        f"pairs: {len(i)} ({demos} demonstrations x {per_demo} targets); mean sequence "
        f"{unshared / len(i):.0f} tokens, a perfect share feeds "
        f"{fed_tokens(shared_scorer, targets, demo_set, i, j, shared=True)}"
    )

    k = min(args.check_pairs, len(i))
    got = [s.pairs(targets, demo_set, i[:k], j[:k]) for s in (shared_scorer, plain_scorer)]
    gap = float(np.abs(got[0] - got[1]).max())
    print(f"float32, {k} pairs: max |d1 shared - d1 unshared| = {gap:.2e} (limit 1e-4)")
    if gap > 1e-4:
        raise SystemExit("FAILED: prefix sharing disagrees with unshared scoring")

    model.to(dtype)
    peak, source = peak_tflops(device)
    print(
        f"\n{dtype}; peak: {peak or 'n/a'} TFLOP/s ({source}); {args.max_batch_tokens} tokens/batch"
    )
    print(
        "| prefix sharing | pairs | model tokens | s | pairs/s | model tokens/s | TFLOP/s "
        "| of peak | peak mem GiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    d1 = []
    for scorer in (shared_scorer, plain_scorer):
        scorer.pairs(targets, demo_set, i[:per_demo], j[:per_demo])  # warm-up
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        d1.append(scorer.pairs(targets, demo_set, i, j))  # returns numpy: synchronised
        seconds = time.perf_counter() - start
        shared = scorer.scoring.prefix_sharing
        tokens = fed_tokens(scorer, targets, demo_set, i, j, shared)
        tflops = 2 * matmul * tokens / seconds / 1e12
        share = f"{tflops / peak:.1%}" if peak else "n/a"
        mem = f"{torch.cuda.max_memory_allocated() / 2**30:.1f}" if device == "cuda" else "n/a"
        print(
            f"| {'on' if shared else 'off'} | {len(i)} | {tokens} | {seconds:.2f} | "
            f"{len(i) / seconds:.1f} | {tokens / seconds:.0f} | {tflops:.3g} | {share} | {mem} |"
        )
    gap = float(np.abs(d1[0] - d1[1]).max())
    print(f"\n{dtype}: max |d1 shared - d1 unshared| over all pairs = {gap:.2e}")


if __name__ == "__main__":
    main()
