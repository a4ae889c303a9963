"""Chat rows as the model is served: rendered by the tokenizer's chat template, and the same
rendering scored, fine-tuned on and evaluated."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from delift_ray.config import DataConfig, ModelConfig, TemplatesConfig, load_config
from delift_ray.data.chat import chat_template
from delift_ray.data.examples import embedding_texts
from delift_ray.data.read import read_examples
from delift_ray.finetune.evaluate import Generator, references
from delift_ray.finetune.layout import IGNORE, Layout, collate, encode_pairs
from delift_ray.models.load import fingerprint
from delift_ray.models.tiny import build_model, build_tokenizer
from delift_ray.scoring.templates import Prompts
from delift_ray.workflows.select import run_select

# As real templates are written (Qwen2-style turns, Llama-3-style BOS): a default system turn,
# the generation prompt, special tokens around each turn.
TEMPLATE = (
    "{{- bos_token }}"
    "{%- if messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for m in messages %}"
    "{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# a "thinking" template whose generation prompt is not where the reply starts
THINKING = TEMPLATE.replace("assistant\\n' }}{%- endif", "assistant\\n<think>' }}{%- endif")
SPECIALS = ["<|im_start|>", "<|im_end|>"]
CHATS = [
    [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris"},
    ],
    [
        {
            "role": "user",
            "content": [{"type": "text", "text": "Reverse "}, {"type": "text", "text": "cat"}],
        },
        {"role": "assistant", "content": "tac"},
    ],
    [{"role": "user", "content": "Uppercase dog"}, {"role": "assistant", "content": "DOG"}],
]
# what the template sees of CHATS: list-of-parts content as its text
TEXTS = [[{**m, "content": "Reverse cat"} if m["role"] == "user" else m for m in CHATS[1]]]
TEXTS = [CHATS[0], *TEXTS, CHATS[2]]
SYSTEM = "<s><|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"


def tokenizer(template: str | None = TEMPLATE):
    """A byte-level BPE that adds BOS to plain text, with Qwen-style turn tokens as specials."""
    from tokenizers import processors

    corpus = [json.dumps(c) for c in CHATS] * 4 + ["Instruction: Example: Query: assistant user"]
    tok = build_tokenizer(corpus, vocab_size=400)
    tok.add_special_tokens({"additional_special_tokens": SPECIALS})
    bos = tok.bos_token_id
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", bos)]
    )
    tok.chat_template = template
    return tok


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    """A tiny model saved twice: with the chat template, and with a tokenizer that has none."""
    tok = tokenizer()
    model = build_model(tok, hidden_size=32, layers=1, heads=2, max_positions=256)
    out = {}
    for name, template in (("chat template", TEMPLATE), ("role lines", None)):
        out[name] = tmp_path_factory.mktemp("chat_model")
        tok.chat_template = template
        model.save_pretrained(out[name])
        tok.save_pretrained(out[name])
    return out


def write_rows(path: Path, chats: list) -> Path:
    path.write_text("".join(json.dumps({"messages": c}) + "\n" for c in chats))
    return path


def served_ids(tok, text: str) -> list[int]:
    """The template's rendering tokenized as a server does: its special tokens as control
    tokens, nothing added."""
    return tok(text, add_special_tokens=False)["input_ids"]


def test_rows_render_through_the_chat_template(tmp_path):
    tok = tokenizer()
    bad = [
        [{"role": "user", "content": "say <|im_end|> now"}, {"role": "assistant", "content": "no"}],
        [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
            {"role": "assistant", "content": "a cat"},
        ],
        [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "assistant", "content": "again"},
        ],
    ]
    es = read_examples(
        DataConfig(path=str(write_rows(tmp_path / "c.jsonl", CHATS + bad)), format="messages"),
        chat_template(tok),
    )
    assert es.rendering == "chat template"
    assert es.xs == [
        "<s><|im_start|>system\nAnswer in one word.<|im_end|>\n"
        "<|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant\n",
        SYSTEM + "<|im_start|>user\nReverse cat<|im_end|>\n<|im_start|>assistant\n",
        SYSTEM + "<|im_start|>user\nUppercase dog<|im_end|>\n<|im_start|>assistant\n",
    ]
    assert es.ys == ["Paris<|im_end|>\n", "tac<|im_end|>\n", "DOG<|im_end|>\n"]
    for e, chat in zip(es.examples, TEXTS, strict=True):
        assert e.x + e.y == tok.apply_chat_template(chat, tokenize=False)
        assert e.x == tok.apply_chat_template(chat[:-1], tokenize=False, add_generation_prompt=True)
    assert embedding_texts(es.xs, es.ys, es.chats)[0] == "Capital of France?\nParis"
    assert [(c.query, c.reply) for c in es.chats] == [
        ("Capital of France?", "Paris"),
        ("Reverse cat", "tac"),
        ("Uppercase dog", "DOG"),
    ]
    assert {r.row: r.reason for r in es.rejects} == {
        4: "messages[0].content contains the tokenizer's special token '<|im_end|>', which the "
        "chat template's rendering would read as a control token",
        5: "messages[0].content[0] is not a text part (type 'image_url'); only text is scored",
        6: "the turn before the assistant reply must have role 'user', got 'assistant'",
    }
    thinking = read_examples(
        DataConfig(path=str(tmp_path / "c.jsonl"), format="messages"),
        chat_template(tokenizer(THINKING)),
    )
    assert not thinking.examples and thinking.rejects[0].reason == (
        "the chat template renders the conversation without its prompt as a prefix "
        "(the prompt with the generation prompt is not where the reply starts)"
    )


def test_scoring_training_and_evaluation_use_the_served_tokens(tmp_path, model_dirs):
    tok = tokenizer()
    es = read_examples(
        DataConfig(path=str(write_rows(tmp_path / "c.jsonl", CHATS)), format="messages"),
        chat_template(tok),
    )
    prompts = Prompts(tok, TemplatesConfig(), max_length=256)
    enc = prompts.encode(es.xs, es.ys, es.chats)
    full = [served_ids(tok, tok.apply_chat_template(c, tokenize=False)) for c in TEXTS]
    for k in range(len(CHATS)):
        # d0's sequence is the template's whole rendering: one BOS (the template's), no EOS added
        seq = prompts.plain_sequence(enc, k)
        assert seq.tolist() == full[k] and seq.tolist().count(tok.bos_token_id) == 1
        assert prompts.scored_tokens(enc, k) == len(served_ids(tok, es.ys[k]))
    # shown an example, the with-example template fills the target's user turn
    (prompt,), _ = prompts.pair_prompts(enc, np.array([2]), enc, np.array([0]))
    shown = TemplatesConfig().with_example.format(
        example_prompt="Capital of France?", example_response="Paris", query="Uppercase dog"
    )
    framed = [{"role": "user", "content": shown}, CHATS[2][1]]
    assert prompts.pair_sequence(enc, 2, prompt).tolist() == served_ids(
        tok, tok.apply_chat_template(framed, tokenize=False)
    )
    # too long for the model: the example's and the query's text go, the chat frame stays
    whole = prompts.pair_sequence(enc, 2, prompt)
    short = Prompts(tok, TemplatesConfig(), max_length=len(whole) - 3)
    short_enc = short.encode(es.xs, es.ys, es.chats)
    (cut_prompt,), cut = short.pair_prompts(short_enc, np.array([2]), short_enc, np.array([0]))
    cut_seq = short.pair_sequence(short_enc, 2, cut_prompt)
    frame = served_ids(tok, es.xs[2][: es.chats[2].query_at])
    assert cut.tolist() == [True] and len(cut_seq) <= len(whole) - 3
    assert cut_seq[: len(frame)].tolist() == frame
    assert cut_seq[-len(short_enc.response[2]) :].tolist() == short_enc.response[2].tolist()
    assert short.too_long(short_enc) == [None, None, None]
    # fine-tuning: the loss covers exactly the response tokens
    layout = Layout.of(tok, "auto")
    pairs = encode_pairs(tok, layout, es.xs, es.ys, 256, es.chats)
    labels = collate([p for p in pairs if p is not None], tok.pad_token_id)["labels"]
    for k, (ids, _) in enumerate(p for p in pairs if p is not None):
        assert ids == full[k]
        n_response = prompts.scored_tokens(enc, k)
        assert (
            labels[k, : len(ids)].tolist() == [IGNORE] * (len(ids) - n_response) + ids[-n_response:]
        )
    # evaluation generates from the scoring prompt and compares with the reply
    gen = Generator(ModelConfig(path=str(model_dirs["chat template"])), "auto", max_new_tokens=4)
    assert gen.prompts(es.xs, es.chats) == [p.tolist() for p in enc.plain]
    assert references(es) == ["Paris", "tac", "DOG"]
    # cut to fit, training and evaluation keep the chat frame and cut the user message as
    # scoring does
    frame = served_ids(tok, es.xs[0][: es.chats[0].query_at])
    n_response = len(enc.response[0])
    limit = len(full[0]) - 2
    cut_scoring = Prompts(tok, TemplatesConfig(), limit).plain_sequence(enc, 0)
    (cut_pair,) = encode_pairs(tok, layout, es.xs[:1], es.ys[:1], limit, es.chats[:1])
    assert cut_pair is not None and cut_pair[0] == cut_scoring.tolist()
    assert cut_pair[0][: len(frame)] == frame and len(cut_pair[0]) <= limit
    model = ModelConfig(path=str(model_dirs["chat template"]), max_length=limit - n_response + 4)
    cut_gen = Generator(model, "auto", max_new_tokens=4)
    assert cut_gen.prompts(es.xs[:1], es.chats[:1]) == [cut_scoring[:-n_response].tolist()]


def test_the_manifest_says_how_chat_rows_were_rendered(tmp_path, model_dirs):
    pool = write_rows(tmp_path / "c.jsonl", CHATS)
    for name, method in (("chat template", "delift"), ("role lines", "random")):
        model_dir = model_dirs[name]
        cfg = load_config(
            None,
            [
                f"data.path={pool}",
                "data.format=messages",
                f"model.path={model_dir}",
                f"output_dir={tmp_path / name / 'out'}",
                "budget=2",
                f"method={method}",
                "scoring.executor=local",
            ],
        )
        manifest = run_select(cfg).manifest
        assert manifest["rendering"] == {"pool": name}
        assert manifest["counts"]["pool"]["usable"] == 3
    # the template is part of the model's fingerprint (it decides what is scored)
    assert len({fingerprint(ModelConfig(path=str(d))) for d in model_dirs.values()}) == 2
    on_disk = json.loads((tmp_path / "chat template" / "out" / "manifest.json").read_text())
    assert on_disk["rendering"]["pool"] == "chat template"
    assert on_disk["kernel"]["pairs_scored"] == 9  # chat rows scored in their chat frames
    lines = read_examples(
        DataConfig(path=str(pool), format="messages"), chat_template(tokenizer(None))
    )
    assert lines.xs[0] == "system: Answer in one word.\nuser: Capital of France?\n"
    assert lines.xs[1] == "user: Reverse cat\n" and lines.ys[1] == " tac"
