"""Task kinds with exactly checkable answers, each defined once.

A kind draws an input from a seeded RNG, solves it, checks an answer, and makes two kinds of
wrong answer: one of the wrong *form* (a form check detects it) and a *plausible* one (right
form, wrong content). Inputs come in four forms (a pseudo-word, two pseudo-words, 2-3 or 2-5
distinct numbers) shared by several kinds, so an input alone does not say which kind it is.
Each kind also carries its pool phrasings; pretraining uses only GENERIC_INSTRUCTIONS, which
name no kind. KINDS is in default pool order, commonest first, the input forms interleaved.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

CONSONANTS = "bcdfghjklmnprstvwz"
VOWELS = "aeiou"

GENERIC_INSTRUCTIONS = (
    "Complete the task.",
    "Respond to the input.",
    "Do what is needed.",
    "Produce the output.",
    "Handle this input.",
    "Give the result.",
)


# ---------------------------------------------------------------------------------------------
# input forms: draw a valid input, or a tiny perturbation of one that stays valid


def draw_word(rng: random.Random) -> str:
    """A pronounceable pseudo-word of 3-7 letters: 1-3 consonant-vowel syllables, maybe a coda."""
    while True:
        word = "".join(
            rng.choice(CONSONANTS) + rng.choice(VOWELS) for _ in range(rng.randint(1, 3))
        )
        if rng.random() < 0.5:
            word += rng.choice(CONSONANTS)
        if len(word) >= 3:
            return word


def perturb_word(word: str, rng: random.Random) -> str:
    """The word with one letter replaced by another of the same class (vowel or consonant)."""
    k = rng.randrange(len(word))
    letters = VOWELS if word[k] in VOWELS else CONSONANTS
    new = rng.choice([c for c in letters if c != word[k]])
    return word[:k] + new + word[k + 1 :]


def draw_two_words(rng: random.Random) -> str:
    """Two different pseudo-words separated by a space."""
    while True:
        a, b = draw_word(rng), draw_word(rng)
        if a != b:
            return f"{a} {b}"


def perturb_two_words(text: str, rng: random.Random) -> str:
    """One of the two words perturbed; the words stay different."""
    while True:
        words = text.split()
        k = rng.randrange(2)
        words[k] = perturb_word(words[k], rng)
        if words[0] != words[1]:
            return " ".join(words)


def numbers_drawer(low: int, high: int) -> Callable[[random.Random], str]:
    """A drawer of low..high distinct integers in 1..99, space-separated."""

    def draw(rng: random.Random) -> str:
        return " ".join(map(str, rng.sample(range(1, 100), rng.randint(low, high))))

    return draw


def perturb_numbers(text: str, rng: random.Random) -> str:
    """One number moved by 1-3 within 1..99; the numbers stay distinct."""
    nums = _ints(text)
    while True:
        k = rng.randrange(len(nums))
        new = nums[k] + rng.choice((-3, -2, -1, 1, 2, 3))
        if 1 <= new <= 99 and new not in nums:
            return " ".join(map(str, [*nums[:k], new, *nums[k + 1 :]]))


# ---------------------------------------------------------------------------------------------
# small helpers shared by the kinds


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split()]


def _is_int(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _is_word(text: str) -> bool:
    """Lowercase ASCII letters only."""
    return text.isascii() and text.isalpha() and text.islower()


def _other_letter(word: str, k: int, rng: random.Random) -> str:
    """The word with letter k replaced by a different letter of the same class and case."""
    lower = word[k].lower()
    letters = VOWELS if lower in VOWELS else CONSONANTS
    new = rng.choice([c for c in letters if c != lower])
    return word[:k] + (new.upper() if word[k].isupper() else new) + word[k + 1 :]


def _other_of(options: list[str], answer: str, rng: random.Random) -> str:
    """A random option different from the answer."""
    return rng.choice([o for o in options if o != answer])


def _near_number(n: int, rng: random.Random, spread: int) -> str:
    """A positive integer within `spread` of n, not n."""
    return str(rng.choice([m for m in range(n - spread, n + spread + 1) if m != n and m > 0]))


def _swap_adjacent(items: list[str], rng: random.Random) -> str:
    k = rng.randrange(len(items) - 1)
    out = [*items[:k], items[k + 1], items[k], *items[k + 2 :]]
    return " ".join(out)


# ---------------------------------------------------------------------------------------------
# the kinds


Solve = Callable[[str], str]
FormOk = Callable[[str, str], bool]
Edit = Callable[[str, random.Random], str]  # (input, rng) -> a perturbed input or wrong answer


@dataclass(frozen=True)
class Kind:
    """One task kind: its pool phrasings, input form, solver, form check and wrong answers."""

    name: str
    phrasings: tuple[str, ...]
    form: str  # "word", "two_words" or "numbers": kinds of one form share their inputs' look
    draw: Callable[[random.Random], str]
    perturb: Edit
    solve: Solve
    form_ok: FormOk
    wrong_form: Edit
    plausible_wrong: Edit

    def check(self, inp: str, answer: str) -> bool:
        """Whether `answer` is exactly right for `inp` (surrounding whitespace ignored)."""
        return answer.strip() == self.solve(inp)

    def detectable(self, inp: str, answer: str) -> bool:
        """Whether `answer` is wrong by its form alone."""
        return not self.form_ok(inp, answer.strip())


def _word_kind(
    name: str,
    phrasings: tuple[str, ...],
    solve: Solve,
    form_ok: FormOk,
    wrong: Edit,
    plausible: Edit,
) -> Kind:
    """A kind on one pseudo-word."""
    return Kind(name, phrasings, "word", draw_word, perturb_word, solve, form_ok, wrong, plausible)


def _numbers_kind(
    name: str,
    phrasings: tuple[str, ...],
    high: int,
    solve: Solve,
    form_ok: FormOk,
    plausible: Edit,
) -> Kind:
    """A kind on 2..high numbers whose wrong-form answer is a pseudo-word."""
    return Kind(
        name,
        phrasings,
        "numbers",
        numbers_drawer(2, high),
        perturb_numbers,
        solve,
        form_ok,
        lambda _inp, rng: draw_word(rng),
        plausible,
    )


def _vowelless(word: str) -> str:
    return "".join(c for c in word if c not in VOWELS)


def _rev_plausible(w: str, rng: random.Random) -> str:
    """The reversal with two different letters swapped (a word always has two different)."""
    rev = w[::-1]
    pairs = [(a, b) for a in range(len(w)) for b in range(a + 1, len(w)) if rev[a] != rev[b]]
    a, b = rng.choice(pairs)
    out = list(rev)
    out[a], out[b] = out[b], out[a]
    return "".join(out)


def _concat_plausible(text: str, rng: random.Random) -> str:
    a, b = text.split()
    if b + a != a + b:
        return b + a
    return _other_letter(a + b, rng.randrange(len(a + b)), rng)


KINDS: dict[str, Kind] = {
    k.name: k
    for k in [
        _word_kind(
            "reverse",
            ("Reverse the word.", "Write the word backwards.", "Spell the word in reverse order."),
            lambda w: w[::-1],
            lambda w, a: _is_word(a) and sorted(a) == sorted(w),
            lambda w, _rng: str(len(w)),
            _rev_plausible,
        ),
        _numbers_kind(
            "add",
            ("Add the numbers.", "What is the sum of the numbers?"),
            3,
            lambda t: str(sum(_ints(t))),
            lambda _t, a: _is_int(a),
            lambda t, rng: _near_number(sum(_ints(t)), rng, 10),
        ),
        _word_kind(
            "uppercase",
            ("Write the word in uppercase.", "Convert the word to capital letters."),
            str.upper,
            lambda w, a: a.isascii() and a.isalpha() and a.isupper() and len(a) == len(w),
            lambda w, _rng: w,
            lambda w, rng: _other_letter(w.upper(), rng.randrange(len(w)), rng),
        ),
        Kind(
            "swap_words",
            ("Swap the two words.", "Put the second word first."),
            "two_words",
            draw_two_words,
            perturb_two_words,
            lambda t: " ".join(t.split()[::-1]),
            lambda t, a: sorted(a.split(" ")) == sorted(t.split(" ")),
            lambda t, _rng: t.split()[0],
            lambda t, _rng: t,
        ),
        _word_kind(
            "first_letter",
            ("What is the first letter of the word?", "Give the word's first letter."),
            lambda w: w[0],
            lambda w, a: len(a) == 1 and a in w,
            lambda w, _rng: w,
            lambda w, rng: _other_of(list(w), w[0], rng),
        ),
        _numbers_kind(
            "sort_numbers",
            ("Sort the numbers from smallest to largest.", "Put the numbers in ascending order."),
            5,
            lambda t: " ".join(map(str, sorted(_ints(t)))),
            lambda t, a: (
                all(_is_int(p) for p in a.split(" "))
                and sorted(map(int, a.split(" "))) == sorted(_ints(t))
            ),
            lambda t, rng: _swap_adjacent([str(n) for n in sorted(_ints(t))], rng),
        ),
        _word_kind(
            "count_letters",
            ("How many letters are in the word?", "Count the letters of the word."),
            lambda w: str(len(w)),
            lambda _w, a: _is_int(a),
            lambda w, _rng: w,
            lambda w, rng: _near_number(len(w), rng, 1),
        ),
        Kind(
            "concat",
            ("Join the two words into one.", "Write the two words together without a space."),
            "two_words",
            draw_two_words,
            perturb_two_words,
            lambda t: t.replace(" ", ""),
            lambda t, a: _is_word(a) and len(a) == len(t) - 1,
            lambda t, _rng: t,
            _concat_plausible,
        ),
        _word_kind(
            "last_letter",
            ("What is the last letter of the word?", "Give the final letter of the word."),
            lambda w: w[-1],
            lambda w, a: len(a) == 1 and a in w,
            lambda w, _rng: w,
            lambda w, rng: _other_of(list(w), w[-1], rng),
        ),
        _numbers_kind(
            "max_number",
            ("What is the largest number?", "Give the biggest of the numbers."),
            5,
            lambda t: str(max(_ints(t))),
            lambda t, a: _is_int(a) and int(a) in _ints(t),
            lambda t, rng: _other_of(t.split(), str(max(_ints(t))), rng),
        ),
        _word_kind(
            "repeat",
            ("Write the word twice.", "Repeat the word two times."),
            lambda w: f"{w} {w}",
            lambda _w, a: len(a.split()) == 2 and all(_is_word(p) for p in a.split()),
            lambda w, _rng: w,
            lambda w, rng: f"{w} {_other_letter(w, rng.randrange(len(w)), rng)}",
        ),
        _numbers_kind(
            "min_number",
            ("What is the smallest number?", "Give the lowest of the numbers."),
            5,
            lambda t: str(min(_ints(t))),
            lambda t, a: _is_int(a) and int(a) in _ints(t),
            lambda t, rng: _other_of(t.split(), str(min(_ints(t))), rng),
        ),
        _word_kind(
            "remove_vowels",
            ("Remove the vowels from the word.", "Delete every vowel in the word."),
            _vowelless,
            lambda _w, a: _is_word(a) and not any(c in VOWELS for c in a),
            lambda w, _rng: w,
            lambda w, rng: _other_letter(_vowelless(w), rng.randrange(len(_vowelless(w))), rng),
        ),
    ]
}
