"""Writing subsets in the input's own format and schema, and the rejects table."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from delift_ray.data.examples import Reject
from delift_ray.data.write import REJECT_SCHEMA, reject_table, write_subset
from tests.data.helpers import good, jline, read, write_lines


def parquet_table() -> pa.Table:
    schema = pa.schema(
        [
            ("instruction", pa.string()),
            ("input", pa.large_string()),
            ("output", pa.string()),
            ("score", pa.float32()),
            ("tags", pa.list_(pa.string())),
            ("meta", pa.struct([("n", pa.int16()), ("ok", pa.bool_())])),
        ],
        metadata={b"origin": b"test"},
    )
    rows = [
        {**good(i), "score": i / 2, "tags": ["a"] * i, "meta": {"n": i, "ok": i % 2 == 0}}
        for i in range(6)
    ]
    rows[1]["input"] = None
    return pa.Table.from_pylist(rows, schema=schema)


def test_parquet_round_trip_keeps_schema_columns_and_order(tmp_path: Path) -> None:
    table = parquet_table()
    pq.write_table(table, tmp_path / "p.parquet", row_group_size=2)
    es = read(tmp_path / "p.parquet")
    assert es.format == "parquet" and es.schema == table.schema
    assert es.schema.metadata == {b"origin": b"test"}
    assert [e.record for e in es.examples] == table.to_pylist()
    assert [e.row for e in es.examples] == [1, 2, 3, 4, 5, 6]
    order = [es.ids[k] for k in (4, 0, 2)]
    write_subset(es, order, tmp_path / "out" / "subset.parquet")
    back = pq.read_table(tmp_path / "out" / "subset.parquet")
    assert back.schema == table.schema
    assert back.to_pylist() == table.take([4, 0, 2]).to_pylist()
    assert list(tmp_path.joinpath("out").iterdir()) == [tmp_path / "out" / "subset.parquet"]


def test_jsonl_subset_lines_equal_records(tmp_path: Path) -> None:
    rows = [good(i, extra={"k": [i, None]}, note="ünï") for i in range(4)]
    es = read(write_lines(tmp_path / "p.jsonl", [jline(r) for r in rows]))
    write_subset(es, [es.ids[3], es.ids[1]], tmp_path / "s.jsonl")
    written = (tmp_path / "s.jsonl").read_bytes()
    assert [json.loads(line) for line in written.splitlines()] == [rows[3], rows[1]]
    write_subset(es, [], tmp_path / "empty.jsonl")
    assert (tmp_path / "empty.jsonl").read_bytes() == b""
    with pytest.raises(KeyError):
        write_subset(es, ["0" * 16], tmp_path / "s.jsonl")
    assert (tmp_path / "s.jsonl").read_bytes() == written


def test_reject_table() -> None:
    empty = reject_table([])
    assert empty.schema == REJECT_SCHEMA and empty.num_rows == 0
    table = reject_table([Reject("a.jsonl", 3, "empty response")])
    assert table.to_pylist() == [{"source": "a.jsonl", "row": 3, "reason": "empty response"}]


def test_write_subset_failure_does_not_clobber(tmp_path: Path, monkeypatch) -> None:
    table = parquet_table()
    pq.write_table(table, tmp_path / "p.parquet")
    es = read(tmp_path / "p.parquet")
    out = tmp_path / "out"
    out.mkdir()
    (out / "subset.parquet").write_bytes(b"previous")

    def broken_write(table: pa.Table, where: Path) -> None:
        Path(where).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", broken_write)
    with pytest.raises(OSError, match="disk full"):
        write_subset(es, es.ids, out / "subset.parquet")
    assert (out / "subset.parquet").read_bytes() == b"previous"
    assert [p.name for p in out.iterdir()] == ["subset.parquet"]
