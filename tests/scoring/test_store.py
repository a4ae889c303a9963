"""Block store: atomic Parquet blocks, validated on read, corrupt blocks removed."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from delift_ray.errors import DeliftError
from delift_ray.scoring.store import BlockStore, block_table, scoring_key


def sample_block(seed: int, n: int = 5):
    rng = np.random.default_rng(seed)
    return block_table(
        [f"t{seed}-{k}" for k in range(n)], [f"d{seed}"] * n, rng.random(n), rng.random(n)
    )


def test_roundtrip_and_u_column(tmp_path):
    store = BlockStore(str(tmp_path / "store"), "key1")
    a, b = sample_block(1), sample_block(2)
    store.write(a)
    store.write(b)
    scan = store.scan()
    assert scan.blocks == 2 and not scan.removed
    got = scan.table.sort_by("target_id").to_pydict()
    want = {k: a.to_pydict()[k] + b.to_pydict()[k] for k in a.column_names}
    assert sorted(got["target_id"]) == sorted(want["target_id"])
    np.testing.assert_allclose(
        np.array(got["u"]), np.array(got["d0"]) - np.array(got["d1"]), rtol=0, atol=0
    )
    assert not list((tmp_path / "store" / "key1" / "pairs").glob(".*.tmp"))


def test_keys_partition_the_store(tmp_path):
    k1 = scoring_key(model="a", template="x")
    k2 = scoring_key(model="b", template="x")
    assert k1 != k2 and k1 == scoring_key(template="x", model="a")
    BlockStore(str(tmp_path), k1).write(sample_block(1))
    assert BlockStore(str(tmp_path), k2).scan().blocks == 0


def test_truncated_and_tampered_blocks_are_removed(tmp_path):
    store = BlockStore(str(tmp_path), "k")
    good = store.write(sample_block(1))
    truncated = store.write(sample_block(2))
    tampered = store.write(sample_block(3))
    blocks = tmp_path / "k" / "pairs"
    data = (blocks / truncated).read_bytes()
    (blocks / truncated).write_bytes(data[: len(data) // 2])
    t = pq.read_table(blocks / tampered)
    d1 = t["d1"].to_numpy().copy()
    d1[0] += 0.5
    pq.write_table(t.set_column(3, "d1", [d1]), blocks / tampered)  # keeps the old metadata

    scan = store.scan()
    assert sorted(scan.removed) == sorted([truncated, tampered])
    assert scan.blocks == 1 and scan.table.num_rows == 5
    assert sorted(p.name for p in blocks.iterdir()) == [good]


def test_uri_filesystem(tmp_path):
    store = BlockStore(f"file://{tmp_path}/s", "k")
    store.write(sample_block(4))
    assert store.scan().table.num_rows == 5


def test_read_named_blocks_checks_each(tmp_path):
    store = BlockStore(str(tmp_path), "k")
    a, b = sample_block(1), sample_block(2, n=3)
    names = [store.write(a), store.write(b)]
    got = store.read(names)
    assert got.num_rows == 8 and got["d1"].to_pylist() == a["d1"].to_pylist() + b["d1"].to_pylist()
    assert store.read([]).num_rows == 0
    (tmp_path / "k" / "pairs" / names[1]).write_bytes(b"not parquet")
    with pytest.raises(DeliftError, match="is missing or corrupt; run again"):
        store.read(names)


def test_check_writable_leaves_nothing_and_fails_early(tmp_path):
    store = BlockStore(str(tmp_path / "s"), "k")
    store.check_writable()
    assert list((tmp_path / "s" / "k" / "pairs").iterdir()) == []
    (tmp_path / "file").write_text("a file, not a directory")
    blocked = BlockStore(str(tmp_path / "file" / "s"), "k")
    with pytest.raises(DeliftError, match=r"store: cannot write to .*file/s/k/pairs: "):
        blocked.check_writable()
