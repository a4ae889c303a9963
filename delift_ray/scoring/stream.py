"""The streamed plan and reduce: needed pairs, what the store has of them, the work items and the
kernels, a bucket of demonstrations at a time, so the driver never holds every pair at once.

A pair (target i, demonstration j) is the key j * n_targets + i: sorted keys are grouped by
demonstration, the order in which blocks are scored. Needed pairs come from a `PairSource` a
chunk of targets at a time, stored pairs from the store's blocks one at a time (the store is
listed once per run); both are appended to per-bucket files on the driver's disk (bucket =
j // demos_per_bucket). Each bucket is then deduplicated and matched against the store, and its
missing pairs cut into blocks of `demos_per_block` distinct demonstrations, counted across
buckets (a bucket's last, partial group carries into the next), so the blocks are exactly those
of an in-memory plan. The blocks are written as Parquet work items (one row per block) beside
the store, where Ray Data's readers and the in-process loop read them.

The reduce reads the blocks this run wrote, routes their pairs to the same buckets, and fills
each kernel column by column (CSC) from the found and the new pairs of each bucket.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from delift_ray.config import SelectionConfig
from delift_ray.errors import DeliftError
from delift_ray.scoring.store import BlockStore
from delift_ray.selection.kernels import kernel_values

PAIRS_PER_BUCKET = 1 << 22  # needed pairs per bucket (32 MiB of keys): the driver's working set
TARGETS_PER_CHUNK = 1 << 15  # targets whose pairs are generated at a time
VALUES = 3  # float64 columns spilled with a stored pair: d0, d1, u
WORK_SCHEMA = pa.schema(
    [
        ("kind", pa.string()),
        ("demos", pa.string()),
        ("i", pa.list_(pa.int64())),
        ("j", pa.list_(pa.int64())),
        ("_delift_index", pa.int64()),
    ]
)
TokenCount = Callable[[str, np.ndarray, np.ndarray], int]


@dataclass(frozen=True)
class PairSource:
    """A kernel's needed pairs without forming them: every pair (dense, `nbrs` None) or each
    target's neighbours in `nbrs` (n_targets, k), plus itself when `same_set`, plus `random_k`
    seeded random demonstrations per target (drawn as `pairs.random_pairs` draws them)."""

    n_targets: int
    n_demos: int
    nbrs: np.ndarray | None = None
    same_set: bool = False
    random_k: int = 0
    seed: int = 0

    @property
    def per_target(self) -> int:
        """Pairs generated per target, duplicates included."""
        if self.nbrs is None:
            return self.n_demos
        return self.nbrs.shape[1] + int(self.same_set) + self.random_k

    def chunks(self, chunk: int = TARGETS_PER_CHUNK) -> Iterator[np.ndarray]:
        """Keys j * n_targets + i of the pairs of each chunk of targets (may repeat a pair)."""
        n = self.n_targets
        rng = np.random.default_rng(self.seed) if self.random_k else None
        for start in range(0, n, chunk):
            rows = np.arange(start, min(start + chunk, n), dtype=np.int64)
            if self.nbrs is None:
                demos = np.arange(self.n_demos, dtype=np.int64)
                yield (demos[None, :] * n + rows[:, None]).reshape(-1)
                continue
            parts = [np.asarray(self.nbrs[start : start + len(rows)], np.int64) * n + rows[:, None]]
            if self.same_set:
                parts.append(rows[:, None] * (n + 1))
            if rng is not None:
                j = rng.integers(0, self.n_demos, len(rows) * self.random_k, dtype=np.int64)
                parts.append(j.reshape(len(rows), self.random_k) * n + rows[:, None])
            yield np.concatenate(parts, axis=1).reshape(-1)

    def all_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Every distinct pair (i, j), grouped by demonstration (for small pools and tests)."""
        chunks = list(self.chunks())
        keys = sorted_unique(np.concatenate(chunks)) if chunks else np.zeros(0, np.int64)
        return keys % self.n_targets, keys // self.n_targets


class Buckets:
    """Append-only spill files of keys (and float64 value rows), one pair of files per bucket."""

    def __init__(self, directory: str, name: str, key_span: int, n_buckets: int, values: int):
        self.prefix = os.path.join(directory, name)
        self.key_span, self.n_buckets, self.values = key_span, n_buckets, values

    def add(self, keys: np.ndarray, values: np.ndarray | None = None) -> None:
        """Append keys (and their value rows) to their buckets, keeping their order."""
        if not len(keys):
            return
        bucket = keys // self.key_span
        order = np.argsort(bucket, kind="stable")
        counts = np.bincount(bucket, minlength=self.n_buckets)
        cuts = np.r_[0, np.cumsum(counts)]
        for b in np.flatnonzero(counts):
            rows = order[cuts[b] : cuts[b + 1]]
            with open(f"{self.prefix}-{b}.keys", "ab") as f:
                keys[rows].tofile(f)
            if self.values:
                assert values is not None
                with open(f"{self.prefix}-{b}.vals", "ab") as f:
                    np.ascontiguousarray(values[rows], np.float64).tofile(f)

    def read(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        """Bucket b's keys and value rows, in the order they were added."""
        path = f"{self.prefix}-{b}.keys"
        if not os.path.exists(path):
            return np.zeros(0, np.int64), np.zeros((0, self.values))
        keys = np.fromfile(path, np.int64)
        if not self.values:
            return keys, np.zeros((len(keys), 0))
        return keys, np.fromfile(f"{self.prefix}-{b}.vals", np.float64).reshape(-1, self.values)


def first_per_key(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct keys and the value row of each key's first occurrence."""
    unique, first = np.unique(keys, return_index=True)
    return unique, values[first]


def member(keys: np.ndarray, sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whether each key is in `sorted_keys`, and its position there (valid where it is)."""
    pos = np.searchsorted(sorted_keys, keys)
    hit = pos < len(sorted_keys)
    hit[hit] = sorted_keys[pos[hit]] == keys[hit]
    return hit, pos


@dataclass
class KernelPlan:
    """One kernel's share of the plan: its shape, buckets and pair counts (not the neighbour
    table, which the plan does not keep once its pairs are bucketed)."""

    n_targets: int
    n_demos: int
    demos_per_bucket: int
    n_buckets: int
    needed: int = 0
    to_score: int = 0

    @property
    def key_span(self) -> int:
        """Keys per bucket."""
        return self.demos_per_bucket * self.n_targets


@dataclass
class StreamPlan:
    """The pairs each kernel needs (on the driver's disk), the stored d0, and the work items."""

    spill: str  # the driver-local directory of the bucket files
    kernels: dict[str, KernelPlan]
    d0: np.ndarray  # stored d0 per pool row, NaN where missing
    work: BlockStore  # where the work items are (beside the store)
    work_files: list[str] = field(default_factory=list)
    blocks: int = 0
    tokens: int = 0  # tokens of the pairs to score (0 without a token count)
    stats: dict[str, object] = field(default_factory=dict)
    write: bool = True  # False: a dry run's plan, which counts blocks but writes no work item

    @property
    def todo_plain(self) -> np.ndarray:
        """Pool rows whose d0 is not yet in the store."""
        return np.flatnonzero(np.isnan(self.d0))

    @property
    def pairs_to_score(self) -> int:
        """Pairs not yet in the store."""
        return sum(k.to_score for k in self.kernels.values())

    def buckets(self, name: str, what: str) -> Buckets:
        """Kernel `name`'s spill files of one kind: need, stored, found, todo or new."""
        k = self.kernels[name]
        values = VALUES if what in ("stored", "found", "new") else 0
        return Buckets(self.spill, f"{name}-{what}", k.key_span, k.n_buckets, values)

    def close(self) -> None:
        """Remove the spill files and the work items (and their directory)."""
        shutil.rmtree(self.spill, ignore_errors=True)
        if self.work_files:
            with contextlib.suppress(OSError):
                self.work.fs.delete_dir(self.work.dir)
        self.work_files.clear()


def id_index(ids: list[str]) -> pd.Index:
    """A hash index of ids (position of each id; built once per set): Python objects, not
    pandas' Arrow strings, whose lookups are several times slower."""
    return pd.Index(np.asarray(ids, dtype=object), dtype=object)


def sorted_unique(keys: np.ndarray) -> np.ndarray:
    """The distinct keys, sorted (a sort and a mask: faster than np.unique's hashing here)."""
    keys = np.sort(keys)
    return keys[np.r_[True, keys[1:] != keys[:-1]]] if len(keys) else keys


def positions(index: pd.Index, values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Position of each value in `index`, -1 where absent (the first position if repeated)."""
    looked = index.get_indexer_for(np.asarray(values.to_numpy(zero_copy_only=False), object))
    return np.asarray(looked, np.int64)


def stored_d0(plain: BlockStore, index: pd.Index, n: int) -> tuple[np.ndarray, int]:
    """d0 per pool row from the plain blocks (a target stored twice: the later block's value,
    as a dict of the scanned rows would hold it; NaN where missing), and how many corrupt blocks
    were removed."""
    d0 = np.full(n, np.nan)
    removed = 0
    for name in plain.names():
        table = plain.read_or_remove(name)
        if table is None:
            removed += 1
            continue
        pos = positions(index, table["target_id"])
        ok = pos >= 0
        d0[pos[ok]] = table["d0"].to_numpy()[ok]
    return d0, removed


def block_keys(
    table: pa.Table, pool: pd.Index, demos: pd.Index, n_targets: int
) -> tuple[np.ndarray, np.ndarray]:
    """Keys of a store block's pairs whose target and demonstration are in the sets, with their
    (d0, d1, u) rows."""
    i = positions(pool, table["target_id"])
    j = positions(demos, table["demo_id"])
    ok = (i >= 0) & (j >= 0)
    values = np.column_stack([table[c].to_numpy() for c in ("d0", "d1", "u")])
    return j[ok] * n_targets + i[ok], values[ok]


def stream_plan(
    sources: dict[str, PairSource],
    ids: dict[str, list[str]],
    pairs_store: BlockStore,
    plain_store: BlockStore,
    work: BlockStore,
    demos_per_block: int,
    count_tokens: TokenCount | None = None,
    pairs_per_bucket: int = PAIRS_PER_BUCKET,
    spill_dir: str | None = None,
    write: bool = True,
) -> StreamPlan:
    """Plan every kernel of `sources` (its demonstrations' ids in `ids`, the pool's under "pool"
    too): the store is listed and read once, block by block, and each kernel's missing pairs are
    written as work items under `work` (only counted unless `write`)."""
    pool_name = next(iter(sources))
    n = sources[pool_name].n_targets
    indexes = {name: id_index(ids[name]) for name in sources}
    kernels = {}
    for name, src in sources.items():
        n_buckets = max(1, -(-src.n_targets * src.per_target // pairs_per_bucket))
        width = max(1, -(-src.n_demos // n_buckets))
        kernels[name] = KernelPlan(src.n_targets, src.n_demos, width, -(-src.n_demos // width))
    spill = tempfile.mkdtemp(prefix="delift-plan-", dir=spill_dir)
    plan = StreamPlan(spill, kernels, np.zeros(0), work, write=write)
    try:
        plan.d0, removed = stored_d0(plain_store, indexes[pool_name], n)
        removed += _spill_stored(plan, pairs_store, indexes)
        for name, src in sources.items():
            need = plan.buckets(name, "need")
            for keys in src.chunks():
                need.add(keys)
        for name in sources:
            _plan_kernel(plan, name, demos_per_block, count_tokens)
    except BaseException:
        plan.close()
        raise
    plan.stats = {
        "pairs_needed": sum(k.needed for k in kernels.values()),
        "blocks_removed_corrupt": removed,
    }
    return plan


def _spill_stored(plan: StreamPlan, store: BlockStore, indexes: dict[str, pd.Index]) -> int:
    """Route every valid stored pair to its kernels' buckets, block by block (in the order the
    store lists them, so that a pair stored twice keeps its first value); corrupt blocks removed."""
    removed = 0
    pool_index = next(iter(indexes.values()))
    for name in store.names():
        table = store.read_or_remove(name)
        if table is None:
            removed += 1
            continue
        for kernel, k in plan.kernels.items():
            keys, values = block_keys(table, pool_index, indexes[kernel], k.n_targets)
            plan.buckets(kernel, "stored").add(keys, values)
    return removed


def _plan_kernel(
    plan: StreamPlan, name: str, demos_per_block: int, count_tokens: TokenCount | None
) -> None:
    """Match each bucket of kernel `name` against the store; write its blocks of missing pairs."""
    k = plan.kernels[name]
    n = k.n_targets
    need_b, stored_b = plan.buckets(name, "need"), plan.buckets(name, "stored")
    found_b, todo_b = plan.buckets(name, "found"), plan.buckets(name, "todo")
    carry = np.zeros(0, np.int64)
    for b in range(k.n_buckets):
        need = sorted_unique(need_b.read(b)[0])
        k.needed += len(need)
        stored, values = first_per_key(*stored_b.read(b))
        hit, pos = member(need, stored)
        found_b.add(need[hit], values[pos[hit]])
        todo = need[~hit]
        todo_b.add(todo)
        k.to_score += len(todo)
        carry = _write_blocks(plan, name, np.r_[carry, todo], n, demos_per_block, count_tokens,
                              last=b == k.n_buckets - 1)  # fmt: skip


def _write_blocks(
    plan: StreamPlan,
    name: str,
    keys: np.ndarray,
    n: int,
    demos_per_block: int,
    count_tokens: TokenCount | None,
    last: bool,
) -> np.ndarray:
    """Write the complete blocks of sorted missing `keys` as one work-item file; returns the
    keys of the last group, which the next bucket may complete (none after the last bucket)."""
    if not len(keys):
        return keys
    j, i = np.divmod(keys, n)
    starts = np.flatnonzero(np.r_[True, j[1:] != j[:-1]])
    cuts = np.r_[starts[::demos_per_block], len(keys)]
    carry = keys[:0]
    if not last:  # the last group may continue in the next bucket
        cuts, carry = cuts[:-1], keys[cuts[-2] :]
    if len(cuts) < 2:
        return carry
    spans = list(itertools.pairwise(cuts))
    first = plan.blocks
    table = pa.table(
        {
            "kind": pa.array(["pairs"] * len(spans), pa.string()),
            "demos": pa.array([name] * len(spans), pa.string()),
            "i": pa.ListArray.from_arrays(pa.array(cuts, pa.int32()), pa.array(i[: cuts[-1]])),
            "j": pa.ListArray.from_arrays(pa.array(cuts, pa.int32()), pa.array(j[: cuts[-1]])),
            "_delift_index": pa.array(np.arange(first, first + len(spans)), pa.int64()),
        },
        schema=WORK_SCHEMA,
    )
    if plan.write:
        path = f"{plan.work.dir}/{name}-{len(plan.work_files):06d}-{uuid.uuid4().hex[:8]}.parquet"
        try:
            plan.work.fs.create_dir(plan.work.dir, recursive=True)
            with plan.work.fs.open_output_stream(path) as out:
                pq.write_table(table, out)
        except OSError as e:  # the store is checked later: its work items fail first
            raise DeliftError(f"store: cannot write to {plan.work.dir}: {e}") from None
        plan.work_files.append(path)
    plan.blocks += len(spans)
    if count_tokens is not None:
        plan.tokens += count_tokens(name, i[: cuts[-1]], j[: cuts[-1]])
    return carry


@dataclass
class WorkBlock:
    """One work item as read back: a block's kind, demonstration set and pairs."""

    kind: str
    demos: str
    i: np.ndarray
    j: np.ndarray
    index: int


def read_work(work: BlockStore, path: str) -> Iterator[WorkBlock]:
    """The blocks of one work-item file, in order."""
    with work.fs.open_input_file(path) as f:
        table = pq.read_table(f)
    i_col, j_col = (table[c].combine_chunks() for c in ("i", "j"))
    offsets = i_col.offsets.to_numpy()
    i_all = i_col.values.to_numpy()
    j_all = j_col.values.to_numpy()
    columns = (table[c].to_pylist() for c in ("kind", "demos", "_delift_index"))
    for r, (kind, demos, index) in enumerate(zip(*columns)):
        a, b = offsets[r], offsets[r + 1]
        yield WorkBlock(kind, demos, i_all[a:b], j_all[a:b], index)


@dataclass
class Reduced:
    """A kernel's raw utilities in CSC order (rows = targets): column pointers, rows, u (and d0,
    d1 when kept for the utilities table)."""

    indptr: np.ndarray
    rows: np.ndarray
    u: np.ndarray
    d0: np.ndarray | None
    d1: np.ndarray | None
    shape: tuple[int, int]

    def ij_order(self) -> np.ndarray:
        """Positions of the entries sorted by (i, j)."""
        cols = np.repeat(np.arange(self.shape[1], dtype=np.int64), np.diff(self.indptr))
        return np.lexsort((cols, self.rows))


def route_new(plan: StreamPlan, store: BlockStore, names: list[str], ids: dict[str, list[str]]):
    """Route the pairs of the blocks this run wrote to each kernel's buckets of new pairs: block
    k is the plan's work item k (scoring reports blocks in work-item order), so its pairs are
    the item's (i, j) and only its utilities are read (each block read once, its checksum and
    row count checked, its first and last ids compared with the item's)."""
    if len(names) != plan.blocks:
        raise DeliftError(
            f"store: {plan.blocks - len(names)} planned blocks were not scored; run again"
        )
    pool = np.asarray(ids[next(iter(plan.kernels))], dtype=object)
    demo_ids = {name: np.asarray(ids[name], dtype=object) for name in plan.kernels}
    items = (w for path in plan.work_files for w in read_work(plan.work, path))
    for name, w in zip(names, items):
        table = store.read_or_remove(name)
        if table is None or table.num_rows != len(w.i) or not _same_ends(table, w, pool, demo_ids):
            raise DeliftError(f"store: block {store.dir}/{name} is missing or corrupt; run again")
        k = plan.kernels[w.demos]
        values = np.column_stack([table[c].to_numpy() for c in ("d0", "d1", "u")])
        plan.buckets(w.demos, "new").add(w.j * k.n_targets + w.i, values)


def _same_ends(
    table: pa.Table, w: WorkBlock, pool: np.ndarray, demo_ids: dict[str, np.ndarray]
) -> bool:
    """Whether a block's first and last pairs name the work item's first and last pairs."""
    if not len(w.i):
        return True
    t, d = table["target_id"], table["demo_id"]
    ends = (0, len(w.i) - 1)
    return all(
        t[e].as_py() == pool[w.i[e]] and d[e].as_py() == demo_ids[w.demos][w.j[e]] for e in ends
    )


def reduce_kernel(plan: StreamPlan, name: str, keep_values: bool) -> Reduced:
    """Kernel `name`'s needed utilities in CSC order, a bucket at a time: the found pairs and
    the new pairs that were missing; DeliftError if a needed pair has no utility."""
    k = plan.kernels[name]
    n, n_demos = k.n_targets, k.n_demos
    counts = np.zeros(n_demos, np.int64)
    rows = np.empty(k.needed, np.int32 if n < 2**31 else np.int64)
    u = np.empty(k.needed)
    d0 = np.empty(k.needed) if keep_values else None
    d1 = np.empty(k.needed) if keep_values else None
    found_b, todo_b, new_b = (plan.buckets(name, w) for w in ("found", "todo", "new"))
    at = 0
    for b in range(k.n_buckets):
        found, found_v = found_b.read(b)
        todo = todo_b.read(b)[0]
        new, new_v = first_per_key(*new_b.read(b))
        hit, pos = member(todo, new)
        if not hit.all():
            missing = int((~hit).sum())
            raise DeliftError(f"store: {missing} needed pairs are missing; run again")
        keys = np.r_[found, todo]
        values = np.r_[found_v, new_v[pos]]
        order = np.argsort(keys, kind="stable")
        keys, values = keys[order], values[order]
        j, i = np.divmod(keys, n)
        end = at + len(keys)
        rows[at:end] = i
        u[at:end] = values[:, 2]
        if d0 is not None and d1 is not None:
            d0[at:end], d1[at:end] = values[:, 0], values[:, 1]
        counts += np.bincount(j, minlength=n_demos)
        at = end
    indptr = np.r_[0, np.cumsum(counts)]
    return Reduced(indptr, rows, u, d0, d1, (n, n_demos))


def scaled_kernel(red: Reduced, selection: SelectionConfig, chunk: int = 1 << 22) -> sp.csc_array:
    """The CSC float64 kernel of the float32-rounded kernel values, element for element what
    `selection.kernels.utility_kernel` stores (global scaling a chunk at a time, without a copy
    of u; a per-target normalisation on the whole kernel's triplets)."""
    if selection.normalize != "none":
        values = kernel_values(
            red.rows, red.u, selection.scaling, selection.normalize, selection.sharpen
        )
        data = values.astype(np.float32).astype(np.float64)
        return sp.csc_array((data, red.rows, red.indptr), shape=red.shape)
    data = np.empty(len(red.u))
    lo = float(red.u.min()) if len(red.u) else 0.0
    hi = float(red.u.max()) if len(red.u) else 0.0
    for s in range(0, len(red.u), chunk):
        u = red.u[s : s + chunk]
        if selection.scaling == "clip":
            scaled = np.maximum(u, 0.0)
        elif hi == lo:  # a constant kernel carries no information
            scaled = np.zeros_like(u)
        else:
            scaled = (u - lo) / (hi - lo)
        if selection.sharpen != 1.0:
            scaled = np.power(scaled, float(selection.sharpen))
        data[s : s + chunk] = scaled.astype(np.float32)
    return sp.csc_array((data, red.rows, red.indptr), shape=red.shape)
