"""The utility block store: raw d0 / d1 / u as Parquet blocks under a local path or any
pyarrow filesystem URI, keyed by what determines a score (model fingerprint, templates,
distance, context limit) so a re-run scores nothing and a stopped run scores only what is missing.

Layout: ``<root>/<scoring key>/pairs/<content hash>.parquet`` for d1 blocks and
``<root>/<scoring key>/plain/...`` for d0 blocks (demo_id "", d1 and u NaN). Each block carries
its row count and a checksum in the Parquet metadata; a block that fails either check is
removed and its pairs count as missing, so they are scored again. Blocks are written beside
their final name and moved into place (on an object store, in one PUT), so a reader never sees
half a block.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from delift_ray import storage
from delift_ray.errors import DeliftError

BLOCK_SCHEMA = pa.schema(
    [
        ("target_id", pa.string()),
        ("demo_id", pa.string()),
        ("d0", pa.float64()),
        ("d1", pa.float64()),
        ("u", pa.float64()),
    ]
)
ROWS_KEY = b"delift.rows"
CHECKSUM_KEY = b"delift.sha256"
OBJECT_STORES = ("s3", "gcs")  # pyarrow filesystems whose objects appear whole or not at all


def scoring_key(**parts: Any) -> str:
    """A short hash of everything that changes a utility value (fingerprint, templates, ...)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def block_table(
    target_ids: list[str], demo_ids: list[str], d0: np.ndarray, d1: np.ndarray
) -> pa.Table:
    """A block of scored pairs (u = d0 - d1) in the store's schema."""
    d0 = np.asarray(d0, dtype=np.float64)
    d1 = np.asarray(d1, dtype=np.float64)
    return pa.table(
        [
            pa.array(target_ids, pa.string()),
            pa.array(demo_ids, pa.string()),
            pa.array(d0),
            pa.array(d1),
            pa.array(d0 - d1),
        ],
        schema=BLOCK_SCHEMA,
    )


def checksum(table: pa.Table) -> str:
    """sha256 over a block's ids and values, independent of how Parquet encodes them."""
    h = hashlib.sha256()
    for name in ("target_id", "demo_id"):
        h.update("\x00".join(table[name].to_pylist()).encode())
    for name in ("d0", "d1", "u"):
        h.update(table[name].to_numpy().astype(np.float64).tobytes())
    return h.hexdigest()


@dataclass
class StoreScan:
    """What a scan of the store found."""

    table: pa.Table
    blocks: int = 0
    removed: list[str] = field(default_factory=list)


class BlockStore:
    """Parquet blocks of scored pairs for one scoring key."""

    def __init__(self, uri: str, key: str, kind: str = "pairs") -> None:
        self.fs, root = storage.resolve(uri, "store.uri")
        self.key = key
        self.dir = f"{root.rstrip('/')}/{key}/{kind}"
        self._created = False

    def check_writable(self) -> None:
        """DeliftError now, before any scoring, unless a file can be written and moved here."""
        probe = f"{self.dir}/.probe-{uuid.uuid4().hex[:8]}"
        try:
            self._create_dir()
            with self.fs.open_output_stream(f"{probe}.tmp") as out:
                out.write(b"")
            self.fs.move(f"{probe}.tmp", probe)
        except OSError as e:
            raise DeliftError(f"store: cannot write to {self.dir}: {e}") from None
        finally:
            _remove_quietly(self.fs, f"{probe}.tmp")
            _remove_quietly(self.fs, probe)

    def write(self, table: pa.Table) -> str:
        """Write one block atomically (temp name, then move; on an object store one PUT, which
        is whole or absent); returns its file name."""
        if table.schema != BLOCK_SCHEMA:
            table = table.cast(BLOCK_SCHEMA)
        digest = checksum(table)
        meta = {ROWS_KEY: str(table.num_rows).encode(), CHECKSUM_KEY: digest.encode()}
        table = table.replace_schema_metadata(meta)
        name = f"{digest[:24]}.parquet"
        final = f"{self.dir}/{name}"
        whole = self.fs.type_name in OBJECT_STORES
        tmp = final if whole else f"{self.dir}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            self._create_dir()
            with self.fs.open_output_stream(tmp) as out:
                pq.write_table(table, out)
            if not whole:
                self.fs.move(tmp, final)
        except OSError as e:
            _remove_quietly(self.fs, tmp)
            raise DeliftError(f"store: cannot write block {final}: {e}") from None
        return name

    def _create_dir(self) -> None:
        if not self._created:
            self.fs.create_dir(self.dir, recursive=True)
            self._created = True

    def scan(self) -> StoreScan:
        """Read every valid block; remove (and report) truncated or corrupt ones."""
        tables, removed = [], []
        selector = pafs.FileSelector(self.dir, allow_not_found=True)
        for info in sorted(self.fs.get_file_info(selector), key=lambda i: i.path):
            if info.type != pafs.FileType.File or not info.path.endswith(".parquet"):
                continue
            name = info.path.rsplit("/", 1)[-1]
            if name.startswith("."):
                continue
            table = self._read_valid(info.path)
            if table is None:
                removed.append(name)
                _remove_quietly(self.fs, info.path)
            else:
                tables.append(table)
        table = pa.concat_tables(tables) if tables else BLOCK_SCHEMA.empty_table()
        return StoreScan(table=table, blocks=len(tables), removed=removed)

    def read(self, names: list[str]) -> pa.Table:
        """The named blocks (as `write` returned them); DeliftError if one is missing or bad."""
        tables = []
        for name in names:
            table = self._read_valid(f"{self.dir}/{name}")
            if table is None:
                raise DeliftError(
                    f"store: block {self.dir}/{name} is missing or corrupt; run again"
                )
            tables.append(table)
        return pa.concat_tables(tables) if tables else BLOCK_SCHEMA.empty_table()

    def _read_valid(self, path: str) -> pa.Table | None:
        try:
            with self.fs.open_input_file(path) as f:
                table = pq.read_table(f)
        except (OSError, pa.ArrowException):
            return None
        meta = table.schema.metadata or {}
        if meta.get(ROWS_KEY) != str(table.num_rows).encode():
            return None
        table = table.replace_schema_metadata(None)
        if table.schema != BLOCK_SCHEMA or meta.get(CHECKSUM_KEY) != checksum(table).encode():
            return None
        return table


def _remove_quietly(fs: pafs.FileSystem, path: str) -> None:
    with contextlib.suppress(OSError):
        fs.delete_file(path)
