"""The testbed: task checkers, pool/test generator, base-model pretraining, acceptance check."""

from __future__ import annotations

import dataclasses
import json
import random
from collections import Counter

import numpy as np
import pytest
from safetensors.torch import load_file
from transformers import AutoTokenizer

from delift_ray.config import DataConfig, TemplatesConfig
from delift_ray.data.read import read_examples
from delift_ray.models.tiny import build_tokenizer
from delift_ray.scoring.templates import Prompts
from delift_ray.testbed import check, generate, pretrain
from delift_ray.testbed.generate import PoolSpec, content_id
from delift_ray.testbed.tasks import GENERIC_INSTRUCTIONS, KINDS

SPEC = PoolSpec(n=400, test_per_kind=50, seed=3)


@pytest.fixture(scope="module")
def sets():
    """(pool, test, validation) rows of SPEC."""
    return generate.generate(SPEC)


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """(cache root, model dir) of the tiny-scale pretrained base model."""
    root = tmp_path_factory.mktemp("testbed_cache")
    return root, pretrain.pretrain(root, pretrain.SCALES["tiny"])


# ---------------------------------------------------------------------------------------------
# kinds


@pytest.mark.parametrize("name", list(KINDS))
def test_checker_right_and_both_wrong_answers(name):
    kind, rng = KINDS[name], random.Random(name)
    for _ in range(300):
        inp = kind.draw(rng)
        right = kind.solve(inp)
        assert kind.check(inp, right) and kind.check(inp, f" {right}\n")
        assert not kind.detectable(inp, right)
        plausible = kind.plausible_wrong(inp, rng)
        assert not kind.check(inp, plausible) and not kind.detectable(inp, plausible)
        wrong_form = kind.wrong_form(inp, rng)
        assert not kind.check(inp, wrong_form) and kind.detectable(inp, wrong_form)
        near = kind.perturb(inp, rng)  # a near-duplicate's input keeps every property above
        assert near != inp and kind.form_ok(near, kind.solve(near))
        assert not kind.detectable(near, kind.plausible_wrong(near, rng))
        assert kind.detectable(near, kind.wrong_form(near, rng))


def test_at_least_ten_kinds_over_shared_input_forms():
    forms = Counter(k.form for k in KINDS.values())
    assert len(KINDS) >= 10 and set(forms) == {"word", "two_words", "numbers"}
    assert min(forms.values()) >= 2  # an input alone never names its kind


# ---------------------------------------------------------------------------------------------
# pool and test set


def test_generation_is_deterministic_for_a_seed(sets):
    assert generate.generate(SPEC) == sets
    assert generate.generate(PoolSpec(n=400, test_per_kind=50, seed=4))[0] != sets[0]


def test_frequencies_and_fractions_as_configured(sets):
    pool = sets.pool
    assert len(pool) == SPEC.n
    on_task = Counter(r["kind"] for r in pool if not r["is_off_task"])
    assert on_task == SPEC.counts
    first, last = SPEC.kinds[0], SPEC.kinds[-1]
    assert on_task[first] >= 4 * on_task[last]  # imbalance 6, rounded
    assert sum(r["is_off_task"] for r in pool) == round(0.05 * SPEC.n)
    assert sum(r["is_wrong"] for r in pool) == round(0.10 * SPEC.n)
    assert sum(r["wrong_detectable"] for r in pool) == round(0.5 * round(0.10 * SPEC.n))
    assert sum(r["near_dup_of"] is not None for r in pool) == round(0.10 * SPEC.n)


def test_labels_match_the_rows(sets):
    pool = sets.pool
    clean_ids = {
        content_id(r): r
        for r in pool
        if not (r["is_wrong"] or r["is_off_task"] or r["near_dup_of"])
    }
    for r in pool:
        assert set(r) == {
            "instruction",
            "input",
            "output",
            "kind",
            "is_wrong",
            "wrong_detectable",
            "is_off_task",
            "near_dup_of",
        }
        kind = KINDS[r["kind"]]
        if r["is_off_task"]:
            assert not r["is_wrong"] and r["near_dup_of"] is None
            continue
        assert r["instruction"] in kind.phrasings
        assert kind.check(r["input"], r["output"]) is not r["is_wrong"]
        assert kind.detectable(r["input"], r["output"]) is r["wrong_detectable"]
        if r["near_dup_of"] is not None:
            original = clean_ids[r["near_dup_of"]]
            assert original["kind"] == r["kind"]
            assert (original["instruction"] == r["instruction"]) != (
                original["input"] == r["input"]
            )


def test_pool_reads_cleanly_with_the_labels_as_extra_columns(sets, tmp_path):
    paths = generate.write(SPEC, tmp_path)
    es = read_examples(DataConfig(path=str(paths["pool"])))
    assert not es.rejects and not es.duplicates and len(es.examples) == SPEC.n
    assert [e.id for e in es.examples] == [content_id(r) for r in sets[0]]
    meta = json.loads(paths["spec"].read_text())
    assert meta["counts"] == SPEC.counts and meta["spec"]["seed"] == SPEC.seed
    assert paths["validation"].read_text().count("\n") == len(sets.validation)


def test_test_set_is_balanced_and_disjoint_from_the_pool(sets):
    pool, test, _ = sets
    assert Counter(r["kind"] for r in test) == dict.fromkeys(KINDS, 50)
    assert not any(r["is_wrong"] or r["is_off_task"] or r["near_dup_of"] for r in test)
    assert all(KINDS[r["kind"]].check(r["input"], r["output"]) for r in test)
    assert not {r["input"] for r in test} & {r["input"] for r in pool}
    assert not {content_id(r) for r in test} & {content_id(r) for r in pool}


def test_validation_set_is_balanced_clean_disjoint_and_leaves_the_other_sets_alone(sets):
    pool, test, validation = sets
    assert Counter(r["kind"] for r in validation) == dict.fromkeys(KINDS, SPEC.val_per_kind)
    assert not any(r["is_wrong"] or r["is_off_task"] or r["near_dup_of"] for r in validation)
    assert all(KINDS[r["kind"]].check(r["input"], r["output"]) for r in validation)
    inputs = {r["input"] for r in validation}
    assert len(inputs) == len(validation)
    assert not inputs & ({r["input"] for r in test} | {r["input"] for r in pool})
    # drawn last: a spec without a validation set has the same pool and test set
    without = generate.generate(dataclasses.replace(SPEC, val_per_kind=0))
    assert without.pool == pool and without.test == test and without.validation == []


def test_kinds_list_and_bad_specs():
    pool, test, _ = generate.generate(PoolSpec(n=100, kinds=("add", "reverse"), test_per_kind=5))
    assert {r["kind"] for r in pool + test} == {"add", "reverse"}
    with pytest.raises(ValueError, match="kinds"):
        PoolSpec(kinds=("add", "nope"))
    with pytest.raises(ValueError, match="too small"):
        PoolSpec(n=20)


# ---------------------------------------------------------------------------------------------
# pretraining


def test_pretraining_never_uses_the_pool_wording():
    rng, settings = random.Random(0), pretrain.SCALES["tiny"]
    texts = [
        pretrain.item_text(pretrain.draw_item(settings, rng), TemplatesConfig()) for _ in range(500)
    ]
    phrasings = {p for k in KINDS.values() for p in k.phrasings}
    assert not any(p in t for p in phrasings for t in texts)
    assert all(any(g in t for g in GENERIC_INSTRUCTIONS) for t in texts)


def test_varied_instructions_never_use_the_pool_wording():
    rng = random.Random(0)
    settings = dataclasses.replace(pretrain.SCALES["tiny"], instructions="varied")
    said = [pretrain.instruction(settings, rng) for _ in range(400)]
    phrasings = {p for k in KINDS.values() for p in k.phrasings}
    assert not phrasings & set(said)
    generic = sum(s in GENERIC_INSTRUCTIONS for s in said)
    assert 150 < generic < 250  # about half generic, half pseudo-word sentences
    assert all(s.endswith(".") and 2 <= len(s.split()) <= 6 for s in said)


def test_response_tail_is_the_query_response_and_eos(tiny_base):
    tok = AutoTokenizer.from_pretrained(tiny_base[1])
    prompts = Prompts(tok, TemplatesConfig(), 256)
    rng, settings = random.Random(1), pretrain.SCALES["tiny"]
    items = [pretrain.draw_item(settings, rng) for _ in range(40)]
    seqs, tails = pretrain.encode_items(items, prompts)
    assert {it.layout for it in items} == set(pretrain.LAYOUTS)
    for item, seq, tail in zip(items, seqs, tails, strict=True):
        assert seq[-1] == tok.eos_token_id
        assert tok.decode(seq[-tail:-1]) == item.y


@pytest.mark.parametrize("scale", ["char", "char-varied"])
def test_character_scales_spell_every_word_one_letter_per_token(scale):
    settings = pretrain.SCALES[scale]
    rng = random.Random(2)
    texts = [
        pretrain.item_text(pretrain.draw_item(settings, rng), TemplatesConfig()) for _ in range(300)
    ]
    tok = build_tokenizer(texts, vocab_size=settings.vocab, max_length=settings.max_positions)
    phrasing = KINDS["reverse"].phrasings[0]  # a pool wording pretraining never shows
    for text in (" kabotir", "kabo", " 41 7 23", " KABO", phrasing):
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
        assert len(tok.tokenize(text)) == len(text)
    pieces = Prompts(tok, TemplatesConfig(), settings.max_positions)
    seqs, _ = pretrain.encode_items([pretrain.draw_item(settings, rng) for _ in range(200)], pieces)
    assert max(len(s) for s in seqs) <= settings.max_positions  # nothing truncated


def test_tagged_scales_name_the_kind_only_in_single_example_layouts():
    settings = pretrain.SCALES["char-tagged"]
    assert len(set(pretrain.TAGS.values())) == len(KINDS)  # one distinct tag per kind
    phrasings = {p for k in KINDS.values() for p in k.phrasings}
    assert not phrasings & set(pretrain.TAGS.values())
    rng = random.Random(4)
    for item in (pretrain.draw_item(settings, rng) for _ in range(400)):
        tagged = [t for t in pretrain.TAGS.values() if t in item.x]
        assert bool(tagged) == (item.layout in ("bare", "plain"))
        assert not any(t in item.ex for t in pretrain.TAGS.values())


def test_pack_rows_fills_rows_in_order_and_predicts_only_responses():
    seqs = [np.arange(n, dtype=np.int32) + 10 * n for n in (3, 4, 2, 5, 6)]
    tails = [1, 2, 1, 3, 2]
    packed = dataclasses.replace(pretrain.SCALES["tiny"], max_positions=8, loss="response")
    step = pretrain.pack_rows(seqs, tails, dataclasses.replace(packed, pack=True))
    assert step.lengths == [[3, 4], [2, 5], [6]]  # a sequence never straddles rows
    assert step.ids[0].tolist() == [30, 31, 32, 40, 41, 42, 43]
    assert step.masks[0].tolist() == [0, 0, 1, 0, 0, 1, 1]
    assert step.masks[1].tolist() == [0, 1, 0, 0, 1, 1, 1]
    single = pretrain.pack_rows(seqs, tails, packed)
    assert single.lengths == [[3], [4], [2], [5], [6]]
    assert single.masks[3].tolist() == [0, 0, 1, 1, 1]
    everything = dataclasses.replace(packed, loss="all", pack=True)
    assert all(m.all() for m in pretrain.pack_rows(seqs, tails, everything).masks)


def test_a_packed_row_computes_what_each_sequence_computes_alone():
    import torch

    from delift_ray.models.tiny import build_model

    tok = build_tokenizer(["kabo tir 12"], vocab_size=259)
    model = build_model(tok, hidden_size=32, layers=2, heads=2, max_positions=64).eval()
    rng = np.random.default_rng(0)
    seqs = [rng.integers(3, 259, n).astype(np.int32) for n in (7, 12, 5, 9)]
    tails = [2, 3, 1, 4]
    settings = dataclasses.replace(pretrain.SCALES["tiny"], max_positions=24, loss="response")
    packed = pretrain.pack_rows(seqs, tails, dataclasses.replace(settings, pack=True))
    assert packed.lengths == [[7, 12, 5], [9]]
    single = pretrain.pack_rows(seqs, tails, settings)
    with torch.no_grad():
        inputs = pretrain.step_tensors(packed, tok.pad_token_id)
        out = model(**inputs)
        alone = [
            model(input_ids=torch.as_tensor(s, dtype=torch.long)[None]).logits[0] for s in seqs
        ]
        ref = model(**pretrain.step_tensors(single, tok.pad_token_id)).loss
    got = torch.cat(
        [out.logits[0, :7], out.logits[0, 7:19], out.logits[0, 19:24], out.logits[1, :9]]
    )
    assert torch.allclose(got, torch.cat(alone), atol=1e-5)
    assert inputs["position_ids"][0, :24].tolist() == [*range(7), *range(12), *range(5)]
    assert int((inputs["labels"] != -100).sum()) == sum(tails)  # the responses, nothing else
    assert abs(out.loss.item() - ref.item()) < 1e-5  # the same loss, packed or one per row


def test_template_literals_are_one_token_and_every_word_stays_letters():
    literals = pretrain.template_literals()
    assert len(literals) == 5 and all(lit.strip() for lit in literals)
    tok = build_tokenizer(["kabo"], vocab_size=259, literals=literals)
    assert len(tok) == 259 + len(literals)
    for lit in literals:
        assert len(tok(lit, add_special_tokens=False)["input_ids"]) == 1
    prompts = Prompts(tok, TemplatesConfig(), 512)
    x = DataConfig().prompt_template.format(instruction=KINDS["reverse"].phrasings[1], input="kabo")
    enc = prompts.encode([x], [" obak"])
    plain = enc.plain[0].tolist()  # literal, " ", "Instruction:", phrasing letters, ... "\n"
    assert tok.decode(plain) == TemplatesConfig().plain.format(query=x)
    assert len(plain) == 1 + 1 + 1 + len(KINDS["reverse"].phrasings[1]) + 1 + 4 + 2
    assert len(enc.response[0]) == 5


def test_packed_scale_is_deterministic_on_two_threads(tmp_path):
    small = dataclasses.replace(
        pretrain.SCALES["packed"],
        hidden=32,
        layers=1,
        heads=2,
        steps=4,
        batch=4,
        warmup=2,
        tokenizer_texts=100,
    )
    a, b = (pretrain.pretrain(tmp_path / name, small) for name in ("a", "b"))
    first, second = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert all((first[k] == second[k]).all() for k in first)
    assert load_file(a / "model.safetensors")["model.embed_tokens.weight"].shape[0] == 264


def test_packed_pretraining_fills_its_rows_and_each_step_is_new_data(tiny_base, tmp_path):
    settings = dataclasses.replace(
        pretrain.SCALES["tiny"], pack=True, loss="response", max_positions=512, steps=6
    )
    prompts = Prompts(AutoTokenizer.from_pretrained(tiny_base[1]), TemplatesConfig(), 512)
    step = pretrain.step_rows(settings, prompts, random.Random(0))
    assert len(step.ids) == settings.batch and all(len(r) <= 512 for r in step.ids)
    assert all(sum(n) == len(r) for n, r in zip(step.lengths, step.ids, strict=True))
    one_each = pretrain.step_rows(
        dataclasses.replace(settings, pack=False), prompts, random.Random(0)
    )
    assert sum(m.sum() for m in step.masks) > 2 * sum(m.sum() for m in one_each.masks)
    steps = list(pretrain.step_stream(settings, prompts))
    again = list(pretrain.step_stream(settings, prompts))
    assert len({s.ids[0].tobytes() for s in steps}) == 6
    assert all((a.ids[0] == b.ids[0]).all() for a, b in zip(steps, again, strict=True))
    model = pretrain.pretrain(tmp_path, settings)
    assert json.loads((model / pretrain.STAMP).read_text())["losses"]


def test_device_flag_picks_the_device(monkeypatch):
    asked = []
    monkeypatch.setattr(pretrain, "pretrain", lambda out, settings, log: asked.append(settings))
    pretrain.main(["--scale", "tiny", "--device", "cuda"])
    pretrain.main(["--scale", "tiny"])
    pretrain.main([])
    assert [a.device for a in asked] == ["cuda", "cpu", "cpu"]
    assert asked[2] == pretrain.SCALES["packed-long"]  # the default scale


def test_unknown_pretraining_options_are_refused():
    with pytest.raises(ValueError, match="loss must be all or response"):
        dataclasses.replace(pretrain.SCALES["tiny"], loss="prompt")


def test_pretraining_is_deterministic_and_cached(tiny_base, tmp_path, monkeypatch):
    root, model_dir = tiny_base
    again = pretrain.pretrain(tmp_path, pretrain.SCALES["tiny"])
    assert again.name == model_dir.name
    a = load_file(model_dir / "model.safetensors")
    b = load_file(again / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)

    def no_training(*_args):
        raise AssertionError("retrained a cached model")

    monkeypatch.setattr(pretrain, "_train", no_training)
    assert pretrain.pretrain(root, pretrain.SCALES["tiny"]) == model_dir
    report = json.loads((model_dir / pretrain.STAMP).read_text())
    assert report["settings"]["steps"] == pretrain.SCALES["tiny"].steps and report["losses"]


# ---------------------------------------------------------------------------------------------
# acceptance check


def test_check_returns_a_row_per_kind(tiny_base, tmp_path):
    paths = generate.write(PoolSpec(n=300, test_per_kind=1, seed=1), tmp_path)
    rows = check.check(tiny_base[1], paths["pool"], per_kind=2)
    assert [r.kind for r in rows] == sorted(KINDS)
    assert all(r.targets == 2 and -1 <= r.same <= 1 and -1 <= r.other <= 1 for r in rows)
    table = check.markdown(rows)
    assert table.count("\n| ") == len(KINDS) and "accepted kinds:" in table


def test_acceptance_rule():
    row = check.KindRow("add", targets=10, d0=0.5, same=0.2, other=0.05, diff=0.15, se=0.02)
    assert row.accepted
    assert not check.KindRow("add", 10, 0.5, 0.2, 0.05, 0.15, 0.06).accepted  # 2.5 SE
    assert not check.KindRow("add", 10, 0.9, 0.0, 0.0, 0.005, 0.0001).accepted  # too small


def test_demo_testbed_builds_a_model_and_its_pool(tmp_path, monkeypatch):
    from delift_ray.testbed import demo

    tiny = dataclasses.replace(pretrain.SCALES["tiny"], kinds=demo.KINDS)
    monkeypatch.setattr(demo, "SETTINGS", tiny)
    monkeypatch.setattr(demo, "POOL", dataclasses.replace(demo.POOL, n=120, test_per_kind=2))
    model, paths = demo.build(tmp_path / "models", tmp_path / "data")
    assert (model / pretrain.STAMP).exists() and model.parent == tmp_path / "models"
    pool = [json.loads(line) for line in paths["pool"].read_text().splitlines()]
    assert len(pool) == 120 and {r["kind"] for r in pool} == set(demo.KINDS)
    monkeypatch.undo()
    assert demo.SETTINGS.kinds == demo.KINDS == demo.POOL.kinds  # pretrained on what it tests
