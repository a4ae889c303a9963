"""The streamed plan and reduce against the in-memory path they replace: the same pairs, the same
blocks, the same kernel and selection, bucket by bucket; a re-run scores nothing."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from delift_ray.config import SelectionConfig
from delift_ray.errors import DeliftError
from delift_ray.scoring.blocks import (
    WorkItems,
    missing,
    needed_utilities,
    pair_table,
    plan_pairs,
)
from delift_ray.scoring.pairs import (
    dense_pairs,
    exact_neighbours,
    neighbour_pairs,
    random_pairs,
    union_pairs,
)
from delift_ray.scoring.store import BlockStore, block_table
from delift_ray.scoring.stream import PairSource, reduce_kernel, route_new, scaled_kernel
from delift_ray.scoring.stream import stream_plan as _stream_plan
from delift_ray.selection.greedy import lazy_greedy
from delift_ray.selection.kernels import utility_kernel
from delift_ray.selection.objectives import facility_location

N, N_CROSS, K, DEMOS_PER_BLOCK = 120, 30, 6, 4


def fake_u(target_ids: list[str], demo_ids: list[str]) -> np.ndarray:
    """A deterministic 'utility' per (target id, demo id), so any two paths must agree."""
    return np.array([(hash((t, d)) % 10_007) / 10_007 - 0.3 for t, d in zip(target_ids, demo_ids)])


def sources(seed: int = 0) -> tuple[dict[str, PairSource], dict[str, list[str]]]:
    rng = np.random.default_rng(seed)
    pool, cross = rng.normal(size=(N, 8)), rng.normal(size=(N_CROSS, 8))
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    cross /= np.linalg.norm(cross, axis=1, keepdims=True)
    srcs = {
        "pool": PairSource(N, N, exact_neighbours(pool, pool, K, True), True, 3, seed),
        "cross": PairSource(N, N_CROSS, exact_neighbours(pool, cross, K, False), False, 2, seed),
    }
    ids = {"pool": [f"p{k}" for k in range(N)], "cross": [f"c{k}" for k in range(N_CROSS)]}
    return srcs, ids


def old_pairs(src: PairSource) -> tuple[np.ndarray, np.ndarray]:
    """choose_pairs before the streamed plan: materialised pairs, unioned with random ones."""
    if src.nbrs is None:
        return dense_pairs(src.n_targets, src.n_demos)
    out = neighbour_pairs(src.nbrs, src.same_set)
    if src.random_k:
        out = union_pairs(out, random_pairs(src.n_targets, src.n_demos, src.random_k, src.seed))
    return out


def stores(root) -> tuple[BlockStore, BlockStore, BlockStore]:
    return (
        BlockStore(str(root), "key", "pairs"),
        BlockStore(str(root), "key", "plain"),
        BlockStore(str(root), "key", "work/run"),
    )


def stream_plan(root, srcs, ids, pairs_per_bucket):
    pairs, plain, work = stores(root)
    return _stream_plan(
        srcs, ids, pairs, plain, work, DEMOS_PER_BLOCK, pairs_per_bucket=pairs_per_bucket
    )


def store_some(root, ids, srcs, share: float) -> None:
    """Score a share of every kernel's pairs (and every d0) into the store, plus a pair stored
    twice with different values and a pair of ids no set has."""
    pairs, plain, _ = stores(root)
    plain.write(block_table(ids["pool"], [""] * N, np.linspace(1, 2, N), np.full(N, np.nan)))
    rng = np.random.default_rng(5)
    for name, src in srcs.items():
        i, j = old_pairs(src)
        keep = rng.random(len(i)) < share
        t, d = [ids["pool"][x] for x in i[keep]], [ids[name][x] for x in j[keep]]
        pairs.write(block_table(t, d, np.ones(len(t)), 1 - fake_u(t, d)))
    pairs.write(block_table([ids["pool"][0], "gone"], [ids["pool"][0], "p1"], [1, 1], [0.5, 0.5]))


@pytest.mark.parametrize("dense", [False, True])
def test_pair_sources_give_the_in_memory_pairs(dense):
    srcs, _ = sources()
    if dense:
        srcs = {name: PairSource(s.n_targets, s.n_demos) for name, s in srcs.items()}
    for src in srcs.values():
        for got, want in zip(src.all_pairs(), old_pairs(src)):
            np.testing.assert_array_equal(got, want)
        # chunks of any size draw the same random demonstrations
        small = np.unique(np.concatenate(list(src.chunks(7))))
        big = np.unique(np.concatenate(list(src.chunks(10_000))))
        np.testing.assert_array_equal(small, big)


@pytest.mark.parametrize("pairs_per_bucket", [50, 1 << 22])
def test_streamed_plan_matches_the_in_memory_plan(tmp_path, pairs_per_bucket):
    srcs, ids = sources()
    store_some(tmp_path, ids, srcs, share=0.4)
    plan = stream_plan(tmp_path, srcs, ids, pairs_per_bucket)
    try:
        if pairs_per_bucket == 50:
            assert plan.kernels["pool"].n_buckets > 10  # the carry across buckets is exercised
        stored = BlockStore(str(tmp_path), "key", "pairs").scan().table
        d0 = np.linspace(1, 2, N)
        np.testing.assert_array_equal(plan.d0, d0)
        want_blocks = []
        for name, src in srcs.items():
            needed = pair_table(ids["pool"], ids[name], *old_pairs(src))
            todo = missing(needed, stored)
            assert plan.kernels[name].needed == needed.num_rows
            assert plan.kernels[name].to_score == todo.num_rows
            want_blocks += plan_pairs(todo, name, d0, DEMOS_PER_BLOCK)
        got = list(WorkItems(plan.work, plan.work_files, plan.blocks, plan.d0).blocks())
        assert len(got) == len(want_blocks) == plan.blocks
        for g, w in zip(got, want_blocks):
            assert (g.kind, g.demos) == (w.kind, w.demos)
            np.testing.assert_array_equal(g.i, w.i)
            np.testing.assert_array_equal(g.j, w.j)
            np.testing.assert_array_equal(g.d0, w.d0)
    finally:
        plan.close()
    assert not (tmp_path / "key" / "work" / "run").exists()  # work items removed with their dir


def score_work(root, plan, ids) -> list[str]:
    """Score every work item with fake_u and write it to the store, as a BlockWorker would."""
    store = BlockStore(str(root), "key", "pairs")
    names = []
    for block in WorkItems(plan.work, plan.work_files, plan.blocks, plan.d0).blocks():
        t = [ids["pool"][x] for x in block.i]
        d = [ids[block.demos][x] for x in block.j]
        names.append(store.write(block_table(t, d, block.d0, block.d0 - fake_u(t, d))))
    return names


def test_streamed_reduce_gives_the_in_memory_kernel_and_selection_and_a_rerun_scores_nothing(
    tmp_path,
):
    srcs, ids = sources(1)
    store_some(tmp_path, ids, srcs, share=0.5)
    before = BlockStore(str(tmp_path), "key", "pairs").scan().table  # the in-memory plan's scan
    plan = stream_plan(tmp_path, srcs, ids, 64)
    new = score_work(tmp_path, plan, ids)
    route_new(plan, BlockStore(str(tmp_path), "key", "pairs"), new, ids)
    written = BlockStore(str(tmp_path), "key", "pairs").read(new)
    for name, src in srcs.items():
        red = reduce_kernel(plan, name, keep_values=True)
        got = scaled_kernel(red, SelectionConfig())
        # the in-memory reduce: found pairs + the new ones, sorted by (i, j)
        needed = pair_table(ids["pool"], ids[name], *old_pairs(src))
        found = needed_utilities(needed, before)
        todo = missing(needed, before)
        table = pa.concat_tables([found, needed_utilities(todo, written)])
        table = table.sort_by([("i", "ascending"), ("j", "ascending")])
        assert table.num_rows == needed.num_rows == got.nnz
        i, j, u = (table[c].to_numpy() for c in ("i", "j", "u"))
        want = utility_kernel(i, j, u, (N, src.n_demos), "minmax")
        assert (got != want).nnz == 0 and got.dtype == np.float64
        for variant in (SelectionConfig(sharpen=2.0), SelectionConfig(normalize="row_rank")):
            shaped = utility_kernel(
                i, j, u, (N, src.n_demos), "minmax", variant.normalize, variant.sharpen
            )
            assert (scaled_kernel(red, variant) != shaped).nnz == 0
        np.testing.assert_array_equal(np.sort(red.u), np.sort(u))
        order = red.ij_order()
        np.testing.assert_array_equal(red.u[order], u)  # (i, j) order, for the transform
        if name == "pool":
            mine, theirs = (
                lazy_greedy(facility_location(got), 30),
                lazy_greedy(facility_location(want), 30),
            )
            np.testing.assert_array_equal(mine.indices, theirs.indices)
            np.testing.assert_array_equal(mine.gains, theirs.gains)
    plan.close()
    again = stream_plan(tmp_path, srcs, ids, 64)
    try:
        assert again.pairs_to_score == 0 and again.blocks == 0 and not again.work_files
        assert again.stats["pairs_needed"] == sum(len(old_pairs(s)[0]) for s in srcs.values())
    finally:
        again.close()


def test_a_missing_new_block_is_an_error_not_a_smaller_kernel(tmp_path):
    srcs, ids = sources(2)
    plan = stream_plan(tmp_path, srcs, ids, 1 << 22)
    store = BlockStore(str(tmp_path), "key", "pairs")
    try:
        new = score_work(tmp_path, plan, ids)
        with pytest.raises(DeliftError, match="1 planned blocks were not scored"):
            route_new(plan, store, new[1:], ids)
        (tmp_path / "key" / "pairs" / new[3]).unlink()
        with pytest.raises(DeliftError, match=f"block .*{new[3]} is missing or corrupt"):
            route_new(plan, store, new, ids)
        with pytest.raises(DeliftError, match="is missing or corrupt"):
            route_new(plan, store, new[1:] + new[:1], ids)  # blocks not in work-item order
    finally:
        plan.close()
