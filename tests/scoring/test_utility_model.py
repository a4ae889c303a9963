"""Batched utility scoring against a deliberately plain one-pair-at-a-time reference."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

from delift_ray.config import ScoringConfig, TemplatesConfig
from delift_ray.models.tiny import build_model, build_tokenizer
from delift_ray.scoring.utility_model import UtilityModel

XS = [
    "Instruction: Reverse the word.\nInput: cat\n",
    "Instruction: Add the numbers.\nInput: 2 3\n",
    "Instruction: Translate to French.\nInput: hello\n",
    "Instruction: Name the capital of France.\nInput: \n",
    "Instruction: Reverse the word.\nInput: " + "dog cat " * 12 + "\n",
    "Instruction: Add the numbers.\nInput: 20 30 40\n",
]
YS = [" tac", " 5", " bonjour", " Paris, the capital of France.", " tac god" * 6, " 90"]
OTHER_XS = ["Instruction: Translate to French.\nInput: cat\n", "Instruction: Say hello.\nInput: \n"]
OTHER_YS = [" chat", " hello hello hello"]
# 16 of the 36 (target, demonstration) pairs, the diagonal included
PAIRS = tuple(
    np.array(a)
    for a in zip(*[(a, b) for a in range(6) for b in range(6) if a == b or (a + b) % 3 == 0])
)
# (distance, max_length, (max_batch_tokens, max_batch_size)); at 96 most demos are cut
CASES = [
    ("d", 256, (8192, 64)),
    ("d", 256, (1, 1)),
    ("cpmi", 256, (300, 3)),
    ("d", 96, (250, 4)),
    ("cpmi", 96, (8192, 64)),
    ("cpmi", 96, (100_000, 2)),
]
# each of demonstrations 0-2 shown to all six targets, and three demonstrations shown once
SHARING_PAIRS = tuple(
    np.array(a) for a in zip(*[(a, b) for b in range(3) for a in range(6)], (1, 3), (0, 5), (4, 4))
)
# (distance, max_length, (max_batch_tokens, max_batch_size)); at 96 and 120 some demos are cut
SHARING_CASES = [
    ("d", 256, (8192, 64)),
    ("cpmi", 256, (300, 3)),
    ("d", 96, (400, 5)),
    ("cpmi", 96, (1, 1)),
    ("d", 120, (100_000, 2)),
    ("cpmi", 120, (8192, 64)),
]


def scorer_for(lm, distance="d", batching=(8192, 64), max_length=256, sharing=True) -> UtilityModel:
    """A scorer over the `lm` fixture with the default templates."""
    model, tok = lm
    tokens, size = batching
    scoring = ScoringConfig(
        distance=distance, max_batch_tokens=tokens, max_batch_size=size, prefix_sharing=sharing
    )
    return UtilityModel(model, tok, TemplatesConfig(), scoring, max_length)


def reference_probs(model, ids: np.ndarray, scored: np.ndarray) -> list[float]:
    """p_t of each token t where scored[t]: one unpadded forward, one softmax per position."""
    with torch.no_grad():
        logits = model(torch.tensor([ids.tolist()])).logits[0]
    return [
        torch.softmax(logits[t - 1], dim=-1)[int(ids[t])].item()
        for t in range(len(ids))
        if scored[t]
    ]


def reference_distance(probs: list[float], distance: str) -> float:
    """d = sqrt(mean (1 - p)^2), or cpmi's mean -log p."""
    if distance == "d":
        return math.sqrt(sum((1 - p) ** 2 for p in probs) / len(probs))
    return sum(-math.log(p) for p in probs) / len(probs)


def sequence(prompts, targets, i, demos=None, j=0) -> np.ndarray:
    """The scored sequence of target i, plain or shown demonstration j."""
    if demos is None:
        return prompts.plain_sequence(targets, i)
    prompt = prompts.pair_prompts(targets, np.array([i]), demos, np.array([j]))[0][0]
    return prompts.pair_sequence(targets, i, prompt)


def reference(scorer, targets, i, demos=None, j=0) -> list[float]:
    """The reference p_t of one pair, from the scorer's token ids; the last T tokens scored."""
    ids = sequence(scorer.prompts, targets, i, demos, j)
    scored = np.arange(len(ids)) >= len(ids) - len(targets.response[i]) - 1
    return reference_probs(scorer.model, ids, scored)


def fit(model, sequences: list[np.ndarray], steps: int) -> None:
    """A few full-batch Adam steps of next-token training on right-padded sequences."""
    width = max(len(ids) for ids in sequences)
    x = torch.zeros(len(sequences), width, dtype=torch.long)
    mask = torch.zeros_like(x)
    for b, ids in enumerate(sequences):
        x[b, : len(ids)], mask[b, : len(ids)] = torch.tensor(ids.tolist()), 1
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        model(
            input_ids=x, attention_mask=mask, labels=x.masked_fill(mask == 0, -100)
        ).loss.backward()
        opt.step()
    model.eval()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny-model forwards are overhead-bound; one thread avoids oversubscribing a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    """The tiny model after a few steps on the scored sequences, so that p_t spreads over (0, 1)."""
    lm = (
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        AutoTokenizer.from_pretrained(tiny_model_dir),
    )
    scorer = scorer_for(lm)
    enc = scorer.encode(XS, YS)
    n = len(XS)
    seqs = [sequence(scorer.prompts, enc, i) for i in range(n)]
    seqs += [sequence(scorer.prompts, enc, i, enc, (i + 1) % n) for i in range(n)]
    fit(lm[0], seqs, steps=30)
    return lm


@pytest.fixture(scope="module")
def ref(lm):
    """Memoised reference p_t over XS/YS: ref(i) plain, ref(i, j) shown example j."""

    @functools.cache
    def probs(i: int, j: int | None, max_length: int) -> list[float]:
        scorer = scorer_for(lm, max_length=max_length)
        enc = scorer.encode(XS, YS)
        return reference(scorer, enc, i) if j is None else reference(scorer, enc, i, enc, j)

    return lambda i, j=None, max_length=256: probs(
        int(i), None if j is None else int(j), max_length
    )


@pytest.mark.parametrize("sharing", [True, False])
@pytest.mark.parametrize(("distance", "max_length", "batching"), CASES)
def test_batched_equals_reference_whatever_the_batches(
    lm, ref, distance, max_length, batching, sharing
):
    scorer = scorer_for(lm, distance, batching, max_length, sharing)
    enc = scorer.encode(XS, YS)
    i, j = PAIRS
    perm = np.random.default_rng(len(CASES)).permutation(len(i))
    want = [reference_distance(ref(a, b, max_length), distance) for a, b in zip(i[perm], j[perm])]
    np.testing.assert_allclose(scorer.pairs(enc, enc, i[perm], j[perm]), want, rtol=0, atol=1e-5)
    idx = np.random.default_rng(1).permutation(len(XS))
    want = [reference_distance(ref(k, None, max_length), distance) for k in idx]
    np.testing.assert_allclose(scorer.plain(enc, idx), want, rtol=0, atol=1e-5)


def test_full_logits_path_equals_reference(lm, ref):
    scorer = scorer_for(lm, batching=(300, 3))
    scorer.keep_logits = False  # as for a model whose forward has no logits_to_keep
    enc = scorer.encode(XS, YS)
    want = [reference_distance(ref(a, b), "d") for a, b in zip(*PAIRS)]
    np.testing.assert_allclose(scorer.pairs(enc, enc, *PAIRS), want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("distance", ["d", "cpmi"])
def test_scored_positions_by_hand_are_the_response_and_closing_eos(distance):
    tok = build_tokenizer(["abc"], vocab_size=100)  # no merges: one token per character
    byte = {" ": "\u0120", "\n": "\u010a"}  # byte-level BPE's symbols for space and newline
    ids_of = lambda text: tok.convert_tokens_to_ids([byte.get(c, c) for c in text])  # noqa: E731
    eos = [tok.eos_token_id]
    response = ids_of(" cd") + eos
    cases = []  # (ids, scored) of the plain and the with-example sequence, by hand
    for prompt in ("Q: ab\n\n", "E:\nxy\n\n z\nQ: ab\n\n"):
        ids = ids_of(prompt) + eos + response
        cases.append((np.array(ids), np.arange(len(ids)) >= len(ids) - len(response)))
    model = build_model(tok, max_positions=64, seed=1)
    fit(model, [ids for ids, _ in cases], steps=20)  # so that p_t differs from token to token
    templates = TemplatesConfig(
        plain="Q: {query}\n", with_example="E:\n{example_prompt}\n{example_response}\nQ: {query}\n"
    )
    scorer = UtilityModel(model, tok, templates, ScoringConfig(distance=distance), max_length=64)
    enc = scorer.encode(["ab\n", "xy\n"], [" cd", " z"])
    got = [scorer.plain(enc, [0])[0], scorer.pairs(enc, enc, [0], [1])[0]]
    for (ids, scored), value in zip(cases, got, strict=True):
        want = reference_distance(reference_probs(model, ids, scored), distance)
        assert value == pytest.approx(want, abs=1e-6)
        no_eos, with_prompt_eos = scored.copy(), scored.copy()
        no_eos[-1] = False
        with_prompt_eos[np.argmax(scored) - 1] = True
        for wrong in (no_eos, with_prompt_eos):
            assert (
                abs(reference_distance(reference_probs(model, ids, wrong), distance) - value) > 1e-3
            )


def test_d_is_in_unit_interval_and_u_is_d0_minus_d1(lm, ref):
    scorer = scorer_for(lm)
    enc = scorer.encode(XS, YS)
    i, j = PAIRS
    d0, d1 = scorer.plain(enc), scorer.pairs(enc, enc, i, j)
    assert ((d0 >= 0) & (d0 <= 1)).all() and ((d1 >= 0) & (d1 <= 1)).all()
    probs = np.concatenate([ref(k) for k in range(len(XS))])
    assert probs.min() < 0.1 < 0.5 < probs.max()  # p_t spreads, so the comparisons mean something
    want = [
        reference_distance(ref(a), "d") - reference_distance(ref(a, b), "d") for a, b in zip(i, j)
    ]
    np.testing.assert_allclose(d0[i] - d1, want, rtol=0, atol=1e-5)


def test_cpmi_utility_is_the_mean_log_probability_gain(lm, ref):
    scorer = scorer_for(lm, "cpmi")
    enc = scorer.encode(XS, YS)
    i, j = PAIRS
    d0, d1 = scorer.plain(enc), scorer.pairs(enc, enc, i, j)
    assert (d0 >= 0).all() and (d1 >= 0).all()
    u = d0[i] - d1
    gains = [np.mean(np.log(ref(a, b)) - np.log(ref(a))) for a, b in zip(i, j)]
    np.testing.assert_allclose(u, gains, rtol=0, atol=1e-5)
    assert (u > 0).any() and (u < 0).any()  # both signs occur, and each matches the gain's


def test_targets_and_demonstrations_from_different_sets(lm):
    scorer = scorer_for(lm, batching=(200, 4))
    targets = scorer.encode(XS, YS)
    demos = scorer.encode(OTHER_XS, OTHER_YS)
    i, j = np.array([0, 5, 2, 3, 4, 1]), np.array([1, 0, 1, 0, 1, 1])
    d1 = scorer.pairs(targets, demos, i, j)
    ref = [reference_distance(reference(scorer, targets, a, demos, b), "d") for a, b in zip(i, j)]
    np.testing.assert_allclose(d1, ref, rtol=0, atol=1e-5)
    # the same demonstration text gives the same d1 whichever set it came from
    both = scorer.encode(XS + OTHER_XS, YS + OTHER_YS)
    np.testing.assert_allclose(scorer.pairs(both, both, i, j + len(XS)), d1, rtol=0, atol=1e-6)


def test_truncated_pairs_score_the_whole_response(lm):
    long_x = "Instruction: Reverse the word.\nInput: " + "dog cat " * 30 + "\n"
    xs, ys = [XS[0], long_x], [YS[0], YS[0]]
    full = scorer_for(lm, max_length=1000)
    n_full = len(sequence(full.prompts, full.encode(xs, ys), 0, full.encode(xs, ys), 1))
    scorer = scorer_for(lm, max_length=n_full - 40)  # the demonstration loses 40 tokens
    enc = scorer.encode(xs, ys)
    ids = sequence(scorer.prompts, enc, 0, enc, 1)
    assert len(ids) == scorer.prompts.max_length
    tail = [*scorer.prompts.eos, *enc.response[0], *scorer.prompts.eos]
    assert ids[-len(tail) :].tolist() == tail
    want = reference_distance(reference(scorer, enc, 0, enc, 1), "d")
    assert scorer.pairs(enc, enc, [0, 1], [1, 0])[0] == pytest.approx(want, abs=1e-5)


def test_too_long_targets_are_reported_and_refused(lm):
    scorer = scorer_for(lm, max_length=64)
    enc = scorer.encode([XS[0], XS[1]], [YS[0], " tac" * 60])
    reasons = scorer.too_long(enc)
    assert reasons[0] is None
    assert reasons[1].startswith(f"response has {len(enc.response[1])} tokens")
    assert reasons[1].endswith("exceeds the model limit of 64")
    with pytest.raises(ValueError, match="target 1 cannot be scored: response has"):
        scorer.plain(enc)
    with pytest.raises(ValueError, match="target 1 cannot be scored"):
        scorer.pairs(enc, enc, [0, 1], [1, 0])
    assert scorer.pairs(enc, enc, [0], [1]).shape == (1,)  # fine as a demonstration


def test_progress_counts_sequences(lm):
    scorer = scorer_for(lm, batching=(300, 2))
    enc = scorer.encode(XS, YS)
    calls = []
    scorer.pairs(enc, enc, np.arange(6), np.arange(6)[::-1], progress=lambda *a: calls.append(a))
    assert len(calls) >= 3
    assert [c[1] for c in calls] == [6] * len(calls)
    assert [c[0] for c in calls] == sorted(c[0] for c in calls) and calls[-1][0] == 6
    assert scorer.plain(enc, np.array([], dtype=np.int64)).shape == (0,)


def shared_and_unshared(scorers, targets, demos, i, j) -> tuple[np.ndarray, np.ndarray]:
    """d1 of the pairs from a (prefix sharing, no sharing) pair of scorers."""
    return tuple(s.pairs(targets, demos, i, j) for s in scorers)


@pytest.mark.parametrize(("distance", "max_length", "batching"), SHARING_CASES)
def test_prefix_sharing_equals_unshared_scoring(lm, distance, max_length, batching):
    scorers = [scorer_for(lm, distance, batching, max_length, sharing) for sharing in (True, False)]
    enc = scorers[0].encode(XS, YS)
    perm = np.random.default_rng(max_length).permutation(len(SHARING_PAIRS[0]))
    i, j = (a[perm] for a in SHARING_PAIRS)
    whole = ~scorers[0].prompts.pair_prompts(enc, i, enc, j)[1]
    assert whole.all() if max_length == 256 else whole.any() and not whole.all()
    shared, unshared = shared_and_unshared(scorers, enc, enc, i, j)
    np.testing.assert_allclose(shared, unshared, rtol=0, atol=1e-5)


@pytest.mark.parametrize("max_length", [96, 256])
def test_prefix_sharing_with_demonstrations_from_another_set(lm, max_length):
    scorers = [scorer_for(lm, "cpmi", (400, 4), max_length, sharing) for sharing in (True, False)]
    targets = scorers[0].encode(XS, YS)
    demos = scorers[0].encode([*OTHER_XS, XS[4]], [*OTHER_YS, YS[4]])  # 2: a long one, cut at 96
    i, j = (a.ravel() for a in np.meshgrid(np.arange(len(XS)), [2, 0, 1]))
    whole = ~scorers[0].prompts.pair_prompts(targets, i, demos, j)[1]
    assert whole.all() if max_length == 256 else whole.any() and not whole.all()
    shared, unshared = shared_and_unshared(scorers, targets, demos, i, j)
    np.testing.assert_allclose(shared, unshared, rtol=0, atol=1e-5)
    want = [
        reference_distance(reference(scorers[0], targets, a, demos, b), "cpmi")
        for a, b in zip(i, j)
    ]
    np.testing.assert_allclose(shared, want, rtol=0, atol=1e-5)


def test_prefix_sharing_with_absolute_position_embeddings(lm):
    tok = lm[1]
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tok),
        n_positions=128,
        n_embd=32,
        n_layer=2,
        n_head=4,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    model = GPT2LMHeadModel(config)
    gpt2 = (model, tok)
    scorer = scorer_for(gpt2, max_length=96)
    enc = scorer.encode(XS, YS)
    fit(model, [sequence(scorer.prompts, enc, a, enc, a) for a in range(6)], 20)
    scorers = [scorer_for(gpt2, "d", (300, 3), 96, sharing) for sharing in (True, False)]
    i, j = SHARING_PAIRS
    assert scorers[0].prompts.pair_prompts(enc, i, enc, j)[1].any()  # some demos are cut
    shared, unshared = shared_and_unshared(scorers, enc, enc, i, j)
    np.testing.assert_allclose(shared, unshared, rtol=0, atol=1e-5)
    want = [reference_distance(reference(scorers[0], enc, a, enc, b), "d") for a, b in zip(i, j)]
    np.testing.assert_allclose(shared, want, rtol=0, atol=1e-5)


def test_prefix_sharing_feeds_each_prefix_to_the_model_once(lm):
    model, tok = lm
    scoring = ScoringConfig(packed_row_tokens=100_000)  # one packed row holds every pair
    scorer = UtilityModel(model, tok, TemplatesConfig(), scoring, 256)
    enc = scorer.encode(XS, YS)
    i, j = SHARING_PAIRS
    fed = []  # tokens of each forward pass's input

    def count(module, args, kwargs):
        fed.append(int(kwargs["input_ids"].numel()))

    hook = scorer.model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        scorer.pairs(enc, enc, i, j)
    finally:
        hook.remove()
    want = 0  # per demonstration: its pairs' longest common prefix once, then what differs
    for b in np.unique(j):
        seqs = [sequence(scorer.prompts, enc, a, enc, b) for a in i[j == b]]
        common = 0
        while all(len(q) > common and q[common] == seqs[0][common] for q in seqs):
            common += 1
        want += common + sum(len(q) - common for q in seqs)
    assert fed == [want]
    assert want < sum(len(sequence(scorer.prompts, enc, a, enc, b)) for a, b in zip(i, j)) * 0.6
