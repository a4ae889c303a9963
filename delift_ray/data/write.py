"""Write what a run keeps of its input: the chosen subset in the input's own format and schema
(JSONL for JSON inputs; Parquet, in the input's Arrow schema, for Parquet and Arrow ones), and
the rejects table."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from delift_ray.data.examples import ExampleSet, Reject
from delift_ray.files import write_bytes, write_parquet

REJECT_SCHEMA = pa.schema([("source", pa.string()), ("row", pa.int64()), ("reason", pa.string())])


def reject_table(rejects: list[Reject]) -> pa.Table:
    """Rejects as a table with columns source (string), row (int64), reason (string)."""
    return pa.table(
        [
            pa.array([r.source for r in rejects], pa.string()),
            pa.array([r.row for r in rejects], pa.int64()),
            pa.array([r.reason for r in rejects], pa.string()),
        ],
        schema=REJECT_SCHEMA,
    )


def write_subset(es: ExampleSet, ids: Sequence[str], path: str | Path) -> None:
    """Write the original records of `ids`, in that order, atomically, in the input's format
    (a path or a URI)."""
    by_id = {e.id: e.record for e in es.examples}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise KeyError(f"write_subset: unknown example id {missing[0]!r}")
    records = [by_id[i] for i in ids]
    if es.format == "parquet":
        write_parquet(pa.Table.from_pylist(records, schema=es.schema), path)
    else:
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        write_bytes(lines.encode("utf-8"), path)
