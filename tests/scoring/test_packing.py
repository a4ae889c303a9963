"""Packed rows: every suffix once, within the token and sequence limits, in the fewest rows."""

from __future__ import annotations

import numpy as np

from delift_ray.scoring.utility_model import _Group, _pack


def _group(prefix: int, suffixes: list[int], first_out: int) -> _Group:
    """A group with a prefix and suffixes of these lengths, outputs numbered from first_out."""
    g = _Group(np.arange(prefix, dtype=np.int32))
    for k, n in enumerate(suffixes):
        g.add(np.full(n, 1000 + first_out + k, np.int32), 1, first_out + k)
    return g


def test_rows_hold_every_suffix_once_within_limits_in_the_fewest_rows() -> None:
    rng = np.random.default_rng(0)
    sizes = [list(rng.integers(5, 40, size=32)) for _ in range(6)]
    groups, start = [], 0
    for prefix, lengths in zip([100, 117, 0, 60, 200, 30], sizes, strict=True):
        groups.append(_group(prefix, lengths, start))
        start += len(lengths)
    rows = _pack(groups, row_tokens=512, max_sequences=20)

    where = sorted(w for r in rows for w in r.where)
    assert where == list(range(start))  # each suffix scored exactly once
    for r in rows:
        assert r.used <= 512 and len(r.where) <= 20
        ids = np.concatenate(r.ids)
        assert len(ids) == r.used
        for (end, _), out in zip(r.scored, r.where, strict=True):
            assert ids[end - 1] == 1000 + out  # the suffix ends where its scores are read
    # a group in one row when its tokens fit: [0] prefix 0, 32 suffixes <= 20 per row -> 2 rows
    per_group = [
        sum(1 for r in rows if set(r.where) & set(range(32 * g, 32 * g + 32))) for g in range(6)
    ]
    need = [
        max(-(-len(g.suffixes) // 20), -(-sum(map(len, g.suffixes)) // (512 - len(g.prefix))))
        for g in groups
    ]
    assert per_group == need


def test_a_sequence_longer_than_a_row_gets_a_row_of_its_own() -> None:
    rows = _pack([_group(0, [600], 0), _group(0, [10, 20], 1)], row_tokens=512, max_sequences=64)
    assert sorted(r.used for r in rows) == [30, 600]
