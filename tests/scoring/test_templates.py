"""Template splitting, token layout, truncation and BOS handling of the scoring prompts."""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import processors
from transformers import AutoTokenizer

from delift_ray.config import TemplatesConfig
from delift_ray.errors import DeliftError
from delift_ray.models.tiny import build_tokenizer
from delift_ray.scoring.templates import EDGE_SLACK, Prompts, split_template, wants_bos

XS = [
    "Instruction: Reverse the word.\nInput: cat\n",
    "Instruction: Translate to French.\nInput: hello\n",
]
YS = [" tac", " bonjour"]
LONG_X = "Instruction: Name the capital of France.\nInput: " + "cat dog " * 40 + "\n"
BYTE_CHAR = {" ": "\u0120", "\n": "\u010a"}  # byte-level BPE's symbols for space and newline


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def char_ids(tok, text: str) -> list[int]:
    """Ids of `text` under a byte-level tokenizer without merges: one token per character."""
    return tok.convert_tokens_to_ids([BYTE_CHAR.get(c, c) for c in text])


def whole(prompts: Prompts, enc, i: int, demos=None, j: int = 0) -> np.ndarray:
    """The scored sequence of target i, plain or shown demonstration j."""
    if demos is None:
        return prompts.plain_sequence(enc, i)
    prompt = prompts.pair_prompts(enc, np.array([i]), demos, np.array([j]))[0][0]
    return prompts.pair_sequence(enc, i, prompt)


def test_default_templates_split_as_documented():
    cfg = TemplatesConfig()
    plain = split_template(cfg.plain, with_example=False)
    assert plain.fields == ("query",)
    assert plain.literals == (
        "Instruction: Please generate a response to the following query.\n\n\nQuery: ",
        "\n",
    )
    ex = split_template(cfg.with_example, with_example=True)
    assert ex.fields == ("example_prompt", "example_response", "query")
    assert ex.literals[0].startswith("Instruction:\nUse the following")
    assert ex.literals[1:] == ("\n", "\n\n\nQuery:\n", "\n")


def test_rendering_rebuilds_the_template_with_literal_braces_and_field_spans():
    text = "A {{b}}:\n{example_response} and {example_prompt} {{c}}\nQ {query} }}end"
    t = split_template(text, with_example=True)
    values = {"example_prompt": "x{0}", "example_response": "y", "query": "q"}
    rendered, spans = t.render(values)
    assert rendered == text.format(**values)
    assert all(rendered[a:b] == values[name] for name, (a, b) in spans.items())


@pytest.mark.parametrize(
    ("text", "with_example", "message"),
    [
        ("no field", False, "must contain each of {query} once, got no fields"),
        ("{query} {query}", False, "must contain each of {query} once"),
        ("{query} {other}", False, "got {query}, {other}"),
        ("{}", False, "must contain each of {query} once"),
        ("{query:>4}", False, "must not have a format"),
        ("{query!r}", False, "must not have a format"),
        ("{example_prompt} {query}", True, "got {example_prompt}, {query}"),
        ("{query} {example_prompt} {example_response}", True, "{query} after the example"),
        ("{example_prompt} {query} {example_response}", True, "{query} after the example"),
    ],
)
def test_bad_templates_are_reported(text, with_example, message):
    with pytest.raises(DeliftError, match="config: templates") as e:
        split_template(text, with_example)
    assert message in str(e.value)


def test_each_prompt_is_its_whole_text_tokenized_once(tok):
    prompts = Prompts(tok, TemplatesConfig(), max_length=512)
    enc = prompts.encode(XS, YS)
    cfg = TemplatesConfig()
    eos = [tok.eos_token_id]
    for i in range(2):
        response = tok(YS[i], add_special_tokens=False)["input_ids"]
        for j in range(2):
            text = cfg.with_example.format(
                example_prompt=XS[j], example_response=YS[j], query=XS[i]
            )
            want = tok(text, add_special_tokens=False)["input_ids"] + eos + response + eos
            assert whole(prompts, enc, i, enc, j).tolist() == want
        text = cfg.plain.format(query=XS[i])
        want = tok(text, add_special_tokens=False)["input_ids"] + eos + response + eos
        assert whole(prompts, enc, i).tolist() == want
        assert tok.decode(enc.response[i]) == YS[i]


def test_layout_by_hand_with_a_one_token_per_character_tokenizer():
    tok = build_tokenizer(["abc"], vocab_size=100)  # no merges: every byte is a token
    templates = TemplatesConfig(
        plain="Q: {query}\n", with_example="E:\n{example_prompt}\n{example_response}\nQ: {query}\n"
    )
    prompts = Prompts(tok, templates, max_length=512)
    enc = prompts.encode(["ab\n", "xy\n"], [" cd", " z"])
    eos = [tok.eos_token_id]
    expected = char_ids(tok, "Q: ab\n\n") + eos + char_ids(tok, " cd") + eos
    assert whole(prompts, enc, 0).tolist() == expected
    expected = char_ids(tok, "E:\nxy\n\n z\nQ: ab\n\n") + eos + char_ids(tok, " cd") + eos
    assert whole(prompts, enc, 0, enc, 1).tolist() == expected


def test_truncation_cuts_the_demo_then_the_query_never_the_response():
    tok = build_tokenizer(["abc"], vocab_size=100)  # no merges: every byte is a token
    templates = TemplatesConfig(
        plain="Q: {query}\n", with_example="E:\n{example_prompt}\n{example_response}\nQ: {query}\n"
    )
    enc = Prompts(tok, templates, 512).encode(["ab\n", "wxyz\n"], [" cd", " z"])
    eos = [tok.eos_token_id]
    tail = eos + char_ids(tok, " cd") + eos

    def cut(max_length: int) -> list[int]:
        return whole(Prompts(tok, templates, max_length), enc, 0, enc, 1).tolist()

    full = "E:\nwxyz\n\n z\nQ: ab\n\n"  # the demo is "wxyz\n\n z", the query "ab\n"
    n = len(full) + len(tail)
    assert cut(n) == char_ids(tok, full) + tail
    # the demo loses 3 characters from its left, the query is whole
    assert cut(n - 3) == char_ids(tok, "E:\nz\n\n z\nQ: ab\n\n") + tail
    # no demo left, the query loses 2 tokens from its left
    assert cut(n - 10) == char_ids(tok, "E:\n\nQ: \n\n") + tail
    # the literals alone do not fit: a clear error, never a cut response
    with pytest.raises(ValueError, match="target 0 cannot be scored"):
        cut(n - 12)


def test_too_long_reports_the_response_length_against_the_worst_template(tok):
    prompts = Prompts(tok, TemplatesConfig(), max_length=64)
    long_y = " tac" * 50
    enc = prompts.encode([*XS, XS[0]], [*YS, long_y])
    n = len(enc.response[2])
    worst = max(prompts.fixed(False), prompts.fixed(True)) + EDGE_SLACK
    assert prompts.fixed(True) > prompts.fixed(False)
    assert prompts.too_long(enc) == [
        None,
        None,
        f"response has {n} tokens; with the template's {worst} fixed tokens it exceeds "
        "the model limit of 64",
    ]
    # fits exactly at the limit, not one token beyond
    edge = Prompts(tok, TemplatesConfig(), max_length=worst + n)
    assert edge.too_long(enc)[2] is None
    assert Prompts(tok, TemplatesConfig(), max_length=worst + n - 1).too_long(enc)[2]


def templates_plain_literals() -> str:
    return TemplatesConfig().plain.format(query="")


class _NoBosTokenizer:
    bos_token_id = None

    def __call__(self, text: str) -> dict[str, list[int]]:
        return {"input_ids": [5]}


def test_bos_auto_always_never(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    bos = tok.bos_token_id
    assert tok("a")["input_ids"][0] != bos  # this tokenizer adds no BOS by itself
    starts = {}
    for mode in ("auto", "always", "never"):
        prompts = Prompts(tok, TemplatesConfig(add_bos=mode), max_length=512)
        enc = prompts.encode(XS, YS)
        starts[mode] = (whole(prompts, enc, 0)[0], whole(prompts, enc, 0, enc, 1)[0])
        literals = tok(templates_plain_literals(), add_special_tokens=False)["input_ids"]
        assert prompts.fixed(False) == len(literals) + 2 + (mode == "always")
    assert starts["always"] == (bos, bos)
    assert bos not in starts["auto"] and bos not in starts["never"]

    tok._tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", bos)]
    )
    assert tok("a")["input_ids"][0] == bos
    assert wants_bos(tok, "auto") and not wants_bos(tok, "never")
    prompts = Prompts(tok, TemplatesConfig(), max_length=512)
    enc = prompts.encode(XS, YS)
    ids = whole(prompts, enc, 0, enc, 1)
    assert ids[0] == bos and bos not in ids[1:]  # pieces are encoded without special tokens

    assert not wants_bos(_NoBosTokenizer(), "auto")
    with pytest.raises(DeliftError, match="add_bos is always, but the tokenizer has no BOS"):
        wants_bos(_NoBosTokenizer(), "always")
