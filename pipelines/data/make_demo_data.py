"""Write the demo data sets (deterministic, stdlib only): `python pipelines/data/make_demo_data.py`.

Eight instruction kinds with short, exactly checkable answers, at imbalanced frequencies.
Every underlying item (a word, a pair of numbers, a country...) lands in exactly one file, so
the pool, target, existing and test sets are disjoint. The pool also carries exact duplicate
rows and broken rows of several kinds, so a demo run shows duplicates and rejects.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

SEED = 20250101
HERE = Path(__file__).resolve().parent

_WORDS = """
apple bread chair dog eagle flame grape house island jacket kite lemon mango night ocean
pencil queen river stone tiger umbrella violin water yellow zebra anchor basket candle desert
engine forest garden hammer insect jungle kettle ladder marble needle orange planet rabbit
saddle table velvet window bottle cactus dragon feather glove harbor igloo jewel koala lantern
meadow nickel oyster parrot quilt rocket silver tunnel wagon yogurt bridge cloud drum frost
ghost honey iron juice knife lion mirror nest onion piano rain shell train vase wolf brick
coin dust fish gold hill ink leaf moon nut owl pearl roof salt tent vine wheel yarn
"""

_ANTONYMS = """
hot:cold big:small fast:slow happy:sad light:dark up:down open:closed early:late full:empty
hard:soft high:low long:short old:young rich:poor strong:weak wet:dry thick:thin loud:quiet
clean:dirty first:last inside:outside love:hate push:pull win:lose buy:sell give:take day:night
begin:end brave:afraid safe:risky sharp:dull sweet:sour wide:narrow true:false friend:enemy
arrive:leave accept:refuse above:below always:never cheap:expensive deep:shallow asleep:awake
import:export north:south
"""

_CAPITALS = """
France:Paris, Germany:Berlin, Italy:Rome, Spain:Madrid, Japan:Tokyo, Egypt:Cairo,
Canada:Ottawa, Kenya:Nairobi, Peru:Lima, Chile:Santiago, Norway:Oslo, Sweden:Stockholm,
Finland:Helsinki, Poland:Warsaw, Greece:Athens, Portugal:Lisbon, Ireland:Dublin,
Austria:Vienna, Hungary:Budapest, Russia:Moscow, China:Beijing, India:New Delhi,
Thailand:Bangkok, Vietnam:Hanoi, Cuba:Havana, Mexico:Mexico City, Argentina:Buenos Aires,
Colombia:Bogota, Australia:Canberra, Turkey:Ankara, Iran:Tehran, Iraq:Baghdad,
Denmark:Copenhagen, Belgium:Brussels, Netherlands:Amsterdam, Switzerland:Bern,
Nigeria:Abuja, Ghana:Accra, Morocco:Rabat, Nepal:Kathmandu
"""


def _pairs(text: str, sep: str | None = None) -> list[tuple[str, str]]:
    """'a:b' items separated by `sep` (any whitespace if None) as [(a, b), ...]."""
    return [(a.strip(), b.strip()) for a, b in (item.split(":") for item in text.split(sep))]


WORDS = _WORDS.split()
ANTONYMS = _pairs(_ANTONYMS)
CAPITALS = _pairs(_CAPITALS, ",")

PHRASINGS = {
    "reverse": ["Reverse the word.", "Write the word backwards."],
    "add": ["Add the two numbers.", "What is the sum of the numbers?"],
    "uppercase": ["Write the word in uppercase.", "Convert the word to capital letters."],
    "count_letters": ["How many letters are in the word?", "Count the letters in the word."],
    "antonym": ["Give the opposite of the word.", "What is the antonym of the word?"],
    "sort": ["Sort the numbers from smallest to largest.", "Put the numbers in ascending order."],
    "first_letter": ["What is the first letter of the word?", "Give the first letter of the word."],
    "capital": ["What is the capital of {country}?", "Name the capital city of {country}."],
}

# rows per kind in each file: imbalanced in the pool; target = rare kinds; existing = common kinds
COUNTS = {
    "pool": {
        "add": 70,
        "reverse": 55,
        "uppercase": 45,
        "sort": 35,
        "count_letters": 30,
        "first_letter": 25,
        "antonym": 18,
        "capital": 12,
    },
    "target": {"antonym": 12, "capital": 10, "sort": 8},
    "existing": {"add": 12, "reverse": 10, "uppercase": 10, "first_letter": 8},
    "test": dict.fromkeys(PHRASINGS, 10),
}
N_DUPLICATES = 10


def _word_items(answer: Callable[[str], str]) -> list[tuple[str, str]]:
    return [(w, answer(w)) for w in WORDS]


def items(kind: str, rng: random.Random) -> list[tuple[str, str]]:
    """Every distinct (input, answer) of a kind, shuffled; capital inputs are country names."""
    if kind == "reverse":
        out = [(w, w[::-1]) for w in WORDS if w != w[::-1]]
    elif kind == "uppercase":
        out = _word_items(str.upper)
    elif kind == "count_letters":
        out = _word_items(lambda w: str(len(w)))
    elif kind == "first_letter":
        out = _word_items(lambda w: w[0])
    elif kind == "add":
        out = [(f"{a} {b}", str(a + b)) for a in range(2, 20) for b in range(2, 20)]
    elif kind == "sort":
        triples = {tuple(rng.sample(range(1, 100), 3)) for _ in range(400)}
        out = [(" ".join(map(str, t)), ", ".join(map(str, sorted(t)))) for t in sorted(triples)]
    elif kind == "antonym":
        out = [pair if rng.random() < 0.5 else pair[::-1] for pair in ANTONYMS]
    else:
        out = list(CAPITALS)
    rng.shuffle(out)
    return out


def row(kind: str, arg: str, answer: str, rng: random.Random) -> dict:
    """One alpaca row; capital rows put the country in the instruction and leave input out."""
    phrasing = rng.choice(PHRASINGS[kind])
    if kind == "capital":
        record = {"instruction": phrasing.format(country=arg)}
        if rng.random() < 0.5:
            record["input"] = ""
    else:
        record = {"instruction": phrasing, "input": arg}
    return {**record, "output": answer, "kind": kind, "source": "synthetic"}


def split_rows(rng: random.Random) -> dict[str, list[dict]]:
    """Clean rows of every file; each (kind, item) is used by at most one file."""
    files: dict[str, list[dict]] = {name: [] for name in COUNTS}
    for kind in PHRASINGS:
        pool = items(kind, rng)
        for name, counts in COUNTS.items():
            n = counts.get(kind, 0)
            if n > len(pool):
                raise SystemExit(f"not enough {kind} items for {name}")
            files[name] += [row(kind, arg, ans, rng) for arg, ans in pool[:n]]
            pool = pool[n:]
    for rows in files.values():
        rng.shuffle(rows)
    return files


def broken_lines() -> list[bytes]:
    """Pool lines that must be rejected, one per kind of problem."""

    def line(obj: object) -> bytes:
        return json.dumps(obj).encode()

    base = {"kind": "reverse", "source": "synthetic"}
    return [
        b'{"instruction": "Reverse the word.", "input": "lamp", "outp',  # truncated JSON
        line({"instruction": "Reverse the word.", "input": "sock", **base}),  # no output
        line({"instruction": "Reverse the word.", "input": "desk", "output": "", **base}),
        line({"instruction": "Reverse the word.", "input": "rope", "output": "   ", **base}),
        line({"instruction": "Add the two numbers.", "input": "3 4", "output": 7, **base}),
        b"[1, 2]",  # not an object
        b'{"instruction": "Write the word in uppercase.", "input": "caf\xe9", "output": "CAFE"}',
        line({"instruction": " ", "input": "cup", "output": "puc", **base}),  # empty instruction
        line(
            {"instruction": "Reverse the word.", "input": "b\u0000g", "output": "g\u0000b", **base}
        ),
    ]


def pool_lines(clean: list[dict], rng: random.Random) -> list[bytes]:
    """Clean rows, exact duplicates after their originals, broken rows and one blank line."""
    lines = [json.dumps(r).encode() for r in clean]
    for k in sorted(rng.sample(range(len(lines)), N_DUPLICATES), reverse=True):
        lines.insert(k + 1 + rng.randrange(20), lines[k])
    for bad in broken_lines():
        lines.insert(rng.randrange(1, len(lines)), bad)
    lines.insert(rng.randrange(1, len(lines)), b"")
    return lines


def main() -> None:
    """(Re)write demo_pool / demo_target / demo_existing / demo_test .jsonl beside this file."""
    rng = random.Random(SEED)
    files = split_rows(rng)
    for name, rows in files.items():
        lines = pool_lines(rows, rng) if name == "pool" else [json.dumps(r).encode() for r in rows]
        path = HERE / f"demo_{name}.jsonl"
        path.write_bytes(b"".join(x + b"\n" for x in lines))
        print(f"{path.name}: {len(lines)} lines")


if __name__ == "__main__":
    main()
