"""Build a tiny causal LM and tokenizer in code, saved like any Hugging Face model directory.

Used by the demo (no model hub here) and by the tests, which then load it by path the same way
a user's model loads.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>"]


def build_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 512,
    max_length: int = 512,
    literals: Iterable[str] = (),
):
    """Train a byte-level BPE tokenizer on `texts`, each of `literals` one token besides;
    returns a transformers fast tokenizer. vocab_size 259 (the byte alphabet and the special
    tokens) leaves no room for merges: a character-level tokenizer."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer)
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in literals])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=max_length,
    )


def build_model(
    tokenizer,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    max_positions: int = 512,
    seed: int = 0,
):
    """A randomly initialised tiny Llama whose vocabulary matches `tokenizer`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval()


def save_tiny_model(out_dir: str | Path, texts: Iterable[str], seed: int = 0, **model_kw) -> Path:
    """Build tokenizer + model from `texts` and save both to `out_dir`; returns the path."""
    out = Path(out_dir)
    tokenizer = build_tokenizer(texts, max_length=model_kw.get("max_positions", 512))
    model = build_model(tokenizer, seed=seed, **model_kw)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
