"""The architecture matrix: the product's default scoring path against a whole-text reference.

Each family is a small model (2 layers) with scaled weights, so that p_t is far from uniform and
a wrong context moves d by far more than the tolerance, over one of three tokenizer kinds real
models ship, trained here: Llama-3/Qwen2-style byte-level BPE with its split pattern, GPT-2-style
byte-level BPE, and SentencePiece-style Metaspace BPE with BOS. The reference tokenizes each
prompt as one text and runs one unpadded sequence per pair; nothing in it comes from the
product's code.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import transformers as tf
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from delift_ray.config import ScoringConfig, TemplatesConfig
from delift_ray.scoring.utility_model import UtilityModel

SPLIT = (  # the Llama-3 / Qwen2 pre-tokenizer pattern
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
XS = [
    "Instruction: Reverse the word.\nInput: cat\n",
    "Instruction: Add the numbers.\nInput: 2 3 4 5 6 7\n",
    "Instruction: Translate to French.\nInput: hello, my friend\n",
    "Instruction: Answer in one line.\nInput: why is the sky blue during the day?\n",
    "Instruction: Copy the list.\nInput: " + "apple pear plum " * 6 + "\n",
    "Instruction: Say it.\nInput: say </s> now\n",
]
YS = [
    " tac",
    " 27",
    " bonjour, mon ami",
    " Light scatters off the air; blue scatters most.",
    " apple pear plum" * 6,
    " I say </s> now <s>",
]
CORPUS = [x + y for x, y in zip(XS, YS)] * 3 + [TemplatesConfig().with_example] * 2
WINDOW = 24  # sliding windows much shorter than the prompts (60-200 tokens)


def byte_level(split_pattern: bool):
    """A byte-level BPE: Llama-3/Qwen2's split pattern, or GPT-2's."""
    tok = Tokenizer(models.BPE())
    if split_pattern:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(SPLIT), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    return tok, alphabet, None


def metaspace():
    """A SentencePiece-style BPE over Metaspace pieces whose post-processor adds BOS."""
    tok = Tokenizer(models.BPE(byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    bos = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    return tok, sorted(set("".join(CORPUS)) | {"▁"}), bos


def build_tokenizer(kind: str):
    """A trained fast tokenizer of the given kind, with <pad>, <s>, </s> as ids 0, 1, 2."""
    tok, alphabet, post = {
        "split": lambda: byte_level(True),
        "gpt2": lambda: byte_level(False),
        "metaspace": metaspace,
    }[kind]()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    if post is not None:
        tok.post_processor = post
    return tf.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


def common(vocab: int) -> dict:
    return dict(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )


FAMILIES = {
    "llama": ("split", lambda v: tf.LlamaConfig(**common(v))),
    "qwen2": (
        "split",
        lambda v: tf.Qwen2Config(
            **common(v),
            use_sliding_window=True,
            sliding_window=WINDOW,
            layer_types=["sliding_attention", "full_attention"],
        ),
    ),
    "mistral": ("metaspace", lambda v: tf.MistralConfig(**common(v), sliding_window=WINDOW)),
    "phi3": ("metaspace", lambda v: tf.Phi3Config(**common(v), sliding_window=WINDOW)),
    "gemma2": (
        "metaspace",
        lambda v: tf.Gemma2Config(**common(v), head_dim=8, sliding_window=WINDOW),
    ),
    "gpt2": (
        "gpt2",
        lambda v: tf.GPT2Config(
            vocab_size=v,
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_positions=512,
            bos_token_id=1,
            eos_token_id=2,
        ),
    ),
    "gpt_neox": (
        "gpt2",
        lambda v: tf.GPTNeoXConfig(
            **{k: w for k, w in common(v).items() if k != "num_key_value_heads"}, rotary_pct=0.5
        ),
    ),
    "lfm2": (
        "split",
        lambda v: tf.Lfm2Config(
            **common(v), layer_types=["conv", "full_attention"], full_attn_idxs=[1]
        ),
    ),
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    """(name, model, tokenizer), briefly trained on the scored texts so p_t spreads over (0, 1)."""
    kind, config = FAMILIES[request.param]
    tok = build_tokenizer(kind)
    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(config(len(tok)))
    seqs = [
        sequence(tok, texts(i, j), YS[i])[0]
        for i in range(len(XS))
        for j in (None, (i + 1) % len(XS))
    ]
    width = max(map(len, seqs))
    x = torch.tensor([s + [0] * (width - len(s)) for s in seqs])
    mask = (torch.arange(width)[None] < torch.tensor([len(s) for s in seqs])[:, None]).long()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        out = model(input_ids=x, attention_mask=mask, labels=x.masked_fill(mask == 0, -100))
        out.loss.backward()
        opt.step()
    return request.param, model.eval(), tok


def sequence(tok, prompt: str, response: str) -> tuple[list[int], int]:
    """[BOS] tok(prompt) EOS tok(response) EOS, whole texts; and where the scored tokens start."""
    ids = tok(prompt, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    if tok("a")["input_ids"][:1] == [tok.bos_token_id]:
        ids = [tok.bos_token_id, *ids]
    y = tok(response, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    return [*ids, tok.eos_token_id, *y, tok.eos_token_id], len(ids) + 1


def reference(model, tok, prompt: str, response: str, distance: str) -> float:
    """d or cpmi of one (prompt, response): whole-text tokens, one unpadded forward."""
    seq, start = sequence(tok, prompt, response)
    with torch.no_grad():
        logp = model(torch.tensor([seq])).logits[0].float().log_softmax(-1)
    p = [logp[t - 1, seq[t]].item() for t in range(start, len(seq))]
    if distance == "cpmi":
        return -sum(p) / len(p)
    return math.sqrt(sum((1 - math.exp(v)) ** 2 for v in p) / len(p))


def texts(i: int, j: int | None) -> str:
    t = TemplatesConfig()
    if j is None:
        return t.plain.format(query=XS[i])
    return t.with_example.format(example_prompt=XS[j], example_response=YS[j], query=XS[i])


# every demonstration shown to several targets (shared prefixes), one shown once, unsorted
TARGETS = np.array([0, 1, 2, 3, 4, 5, 1, 3, 5, 0, 2, 4, 5])
DEMOS = np.array([2, 2, 2, 2, 2, 2, 4, 4, 4, 5, 5, 5, 0])


@pytest.mark.parametrize("distance", ["d", "cpmi"])
@pytest.mark.parametrize("row_tokens", [4096, 160])
def test_default_path_equals_whole_text_reference(family, distance, row_tokens):
    name, model, tok = family
    scoring = ScoringConfig(distance=distance, packed_row_tokens=row_tokens)
    scorer = UtilityModel(model, tok, TemplatesConfig(), scoring, max_length=512)
    enc = scorer.encode(XS, YS)
    d0 = scorer.plain(enc)
    d1 = scorer.pairs(enc, enc, TARGETS, DEMOS)
    want0 = [reference(model, tok, texts(i, None), YS[i], distance) for i in range(len(XS))]
    want1 = [reference(model, tok, texts(i, j), YS[i], distance) for i, j in zip(TARGETS, DEMOS)]
    np.testing.assert_allclose(d0, want0, atol=1e-5, rtol=0, err_msg=name)
    np.testing.assert_allclose(d1, want1, atol=1e-5, rtol=0, err_msg=name)
    # the weights discriminate: another demonstration moves the reference 20x the tolerance
    assert abs(want1[0] - reference(model, tok, texts(0, 4), YS[0], distance)) > 2e-4
    if name == "lfm2":
        assert "conv layers" in scorer.refusal and not scorer.packed
    else:
        assert scorer.refusal is None and scorer.packed, scorer.refusal


def test_data_text_never_becomes_a_control_token(family):
    _, model, tok = family
    scorer = UtilityModel(model, tok, TemplatesConfig(), ScoringConfig(), max_length=512)
    enc = scorer.encode(XS, YS)
    response = enc.response[5].tolist()
    assert tok.eos_token_id not in response and tok.bos_token_id not in response
    prompt = scorer.prompts.pair_prompts(enc, np.array([5]), enc, np.array([5]))[0][0]
    assert tok.eos_token_id not in prompt.tolist()
