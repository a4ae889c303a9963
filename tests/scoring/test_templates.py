"""Template splitting, token layout, truncation and BOS handling of the scoring prompts."""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import processors
from transformers import AutoTokenizer

from delift_ray.config import TemplatesConfig
from delift_ray.errors import DeliftError
from delift_ray.models.tiny import build_tokenizer
from delift_ray.scoring.templates import Prompts, split_template, wants_bos

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


def whole(prompts: Prompts, *args) -> np.ndarray:
    return np.concatenate(prompts.sequence(*args))


def test_default_templates_split_as_documented():
    cfg = TemplatesConfig()
    plain = split_template(cfg.plain, with_example=False)
    assert plain.head == plain.demo == ""
    assert (
        plain.mid == "Instruction: Please generate a response to the following query.\n\n\nQuery:"
    )
    assert plain.query == " {query}\n"
    ex = split_template(cfg.with_example, with_example=True)
    assert ex.head.startswith("Instruction:\nUse the following") and ex.head.endswith("Example:")
    assert ex.demo == "\n{example_prompt}\n{example_response}"
    assert ex.mid == "\n\n\nQuery:"
    assert ex.query == "\n{query}\n"


def test_regions_rebuild_the_template_with_literal_braces():
    text = "A {{b}}:\n{example_response} and {example_prompt} {{c}}\nQ {query} }}end"
    t = split_template(text, with_example=True)
    values = {"example_prompt": "x{0}", "example_response": "y", "query": "q"}
    rebuilt = t.head + t.demo.format(**values) + t.mid + t.query.format(query="q")
    assert rebuilt == text.format(**values)


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


def test_prefix_depends_only_on_the_demo_and_decodes_to_the_template(tok):
    prompts = Prompts(tok, TemplatesConfig(), max_length=512)
    enc = prompts.encode(XS, YS)
    cfg = TemplatesConfig()
    for i in range(2):
        for j in range(2):
            prefix, suffix = prompts.sequence(enc, i, enc, j)
            assert np.array_equal(prefix, prompts.sequence(enc, 1 - i, enc, j)[0])
            query = suffix[: -len(enc.response[i]) - 2]
            assert np.array_equal(query, prompts.sequence(enc, i, enc, 1 - j)[1][: len(query)])
            text = cfg.with_example.format(
                example_prompt=XS[j], example_response=YS[j], query=XS[i]
            )
            assert tok.decode(prefix) + tok.decode(query) == text
        prefix, suffix = prompts.sequence(enc, i)
        query = suffix[: -len(enc.response[i]) - 2]
        assert tok.decode(prefix) + tok.decode(query) == cfg.plain.format(query=XS[i])
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
    prefix, suffix = prompts.sequence(enc, 0, enc, 1)
    assert np.concatenate([prefix, suffix]).tolist() == expected
    assert prefix.tolist() == char_ids(tok, "E:\nxy\n\n z\nQ:")


def test_truncation_cuts_the_demo_then_the_query_never_the_response(tok):
    full = Prompts(tok, TemplatesConfig(), max_length=10_000)
    enc = full.encode([XS[0], LONG_X], [YS[0], YS[1]])
    fixed, query, demo = full.fixed(True), enc.query[0], enc.demo[1]
    response = enc.response[0]
    scored = np.concatenate([response, full.eos])
    head, mid = full.head[True], full.mid[True]
    n_full = fixed + len(response) + len(query) + len(demo)
    assert (
        whole(full, enc, 0, enc, 1).tolist()
        == np.concatenate([head, demo, mid, query, full.eos, response, full.eos]).tolist()
    )

    def cut(max_length):
        p = Prompts(tok, TemplatesConfig(), max_length=max_length)
        ids = whole(p, enc, 0, enc, 1)
        assert len(ids) == min(n_full, max_length) == p.lengths(enc, np.array([0]), enc, [1])[0]
        assert np.array_equal(ids[-len(scored) :], scored)
        return ids

    # the demo loses 10 tokens from its left; the query is whole
    ids = cut(n_full - 10)
    kept = np.concatenate([head, demo[10:], mid, query, full.eos, response, full.eos])
    assert ids.tolist() == kept.tolist()
    # no demo left, the query loses 3 tokens from its left
    ids = cut(fixed + len(response) + len(query) - 3)
    assert ids.tolist() == np.concatenate([head, mid, query[3:], full.eos, scored]).tolist()
    # nothing left but the literals and the scored part
    ids = cut(fixed + len(response))
    assert ids.tolist() == np.concatenate([head, mid, full.eos, scored]).tolist()
    # one token less and the target cannot be scored
    small = Prompts(tok, TemplatesConfig(), max_length=fixed + len(response) - 1)
    with pytest.raises(ValueError, match="target 0 cannot be scored: response has"):
        small.sequence(enc, 0, enc, 1)
    with pytest.raises(ValueError, match="target 0 cannot be scored"):
        small.lengths(enc, np.array([0]), enc, np.array([1]))


def test_too_long_reports_the_response_length_against_the_worst_template(tok):
    prompts = Prompts(tok, TemplatesConfig(), max_length=64)
    long_y = " tac" * 50
    enc = prompts.encode([*XS, XS[0]], [*YS, long_y])
    n = len(enc.response[2])
    worst = max(prompts.fixed(False), prompts.fixed(True))
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
        assert prompts.fixed(False) == len(prompts.mid[False]) + 2 + (mode == "always")
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
