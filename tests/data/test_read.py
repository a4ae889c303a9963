"""Reading example sets (JSONL, Parquet, directories, URIs): each bad row a reject with a reason."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from delift_ray.data.examples import example_id
from delift_ray.data.write import write_subset
from delift_ray.errors import DeliftError
from tests.data.helpers import DEMO, good, jline, read, write_lines


def test_every_reject_kind_has_row_and_reason(tmp_path: Path) -> None:
    lines = [
        jline(good(1)),  # 1
        b'{"instruction": "a", "output": "b"',  # 2 truncated
        b"[1, 2]",  # 3 not an object
        b'{"instruction": "caf\xe9", "output": "x"}',  # 4 bad UTF-8
        b"",  # 5 blank: skipped, not a row
        jline({"instruction": "a", "input": "b"}),  # 6
        jline({"instruction": "a", "output": ""}),  # 7
        jline({"instruction": "a", "output": " \n\t"}),  # 8
        jline({"instruction": 3, "output": "b"}),  # 9
        jline({"instruction": "a", "input": ["x"], "output": "b"}),  # 10
        jline({"instruction": "a\u0000", "output": "b"}),  # 11
        jline({"instruction": "  ", "output": "b"}),  # 12
        jline({"input": "a", "output": "b"}),  # 13
        jline({"instruction": "a", "output": None}),  # 14
        b'{"instruction": "a", "output": "\\ud800"}',  # 15 unpaired surrogate
        b'"just a string"',  # 16
        jline(good(2)),  # 17
    ]
    es = read(write_lines(tmp_path / "p.jsonl", lines))
    got = {r.row: r.reason for r in es.rejects}
    assert got == {
        2: "invalid JSON: Expecting ',' delimiter (column 35)",
        3: "not a JSON object (got list)",
        4: "invalid UTF-8 at byte 20",
        6: "missing field 'output'",
        7: "empty response",
        8: "empty response",
        9: "field 'instruction' must be a string, got int",
        10: "field 'input' must be a string, got list",
        11: "field 'instruction' contains a NUL byte",
        12: "empty instruction",
        13: "missing field 'instruction'",
        14: "field 'output' is null",
        15: "field 'output' contains an unpaired surrogate",
        16: "not a JSON object (got str)",
    }
    assert all(r.source == str(tmp_path / "p.jsonl") for r in es.rejects)
    assert [(e.row, e.record) for e in es.examples] == [(1, good(1)), (17, good(2))]
    assert es.n_rows_read == 16
    assert es.format == "jsonl" and es.schema is None


def test_good_rows_render_and_keep_record(tmp_path: Path) -> None:
    rows = [
        {"instruction": "Add.", "input": "2 3", "output": "5", "kind": "add", "n": 1},
        {"instruction": "Capital of France?", "output": "Paris"},
        {"instruction": "Capital of Peru?", "input": None, "output": "Lima"},
    ]
    es = read(write_lines(tmp_path / "p.jsonl", [jline(r) for r in rows]))
    assert [e.record for e in es.examples] == rows
    assert es.xs == [
        "Instruction: Add.\nInput: 2 3\n",
        "Instruction: Capital of France?\nInput: \n",
        "Instruction: Capital of Peru?\nInput: \n",
    ]
    assert es.ys == [" 5", " Paris", " Lima"]
    assert es.ids == [example_id(x, y) for x, y in zip(es.xs, es.ys, strict=True)]
    assert [e.row for e in es.examples] == [1, 2, 3]


def test_crlf_bom_and_no_final_newline(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + jline(good(1)) + b"\r\n\r\n" + jline(good(2)))
    es = read(path)
    assert [e.row for e in es.examples] == [1, 3] and es.rejects == []
    assert es.examples[0].record == good(1)


def test_empty_file_is_zero_rows(tmp_path: Path) -> None:
    (tmp_path / "p.jsonl").write_bytes(b"")
    es = read(tmp_path / "p.jsonl")
    assert es.examples == [] and es.rejects == [] and es.n_rows_read == 0


def test_ids_stable_equal_and_distinct() -> None:
    a = example_id("Instruction: x\n", " y")
    assert a == example_id("Instruction: x\n", " y")
    assert len(a) == 16 and int(a, 16) >= 0
    assert a != example_id("Instruction: x\n", " z")
    assert example_id("ab", "c") != example_id("a", "bc")
    assert example_id("é", "☃") != example_id("e", "☃")


def test_ids_equal_across_reads_and_formats(tmp_path: Path) -> None:
    rows = [good(i) for i in range(5)]
    jsonl = read(write_lines(tmp_path / "p.jsonl", [jline(r) for r in rows]))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    parquet = read(tmp_path / "p.parquet")
    assert jsonl.ids == read(tmp_path / "p.jsonl").ids == parquet.ids
    assert len(set(jsonl.ids)) == 5


def test_duplicates_kept_once_and_counted(tmp_path: Path) -> None:
    lines = [jline(good(1)), jline(good(2)), jline(good(1)), jline(good(1, kind="other"))]
    lines.append(jline(good(2)))
    es = read(write_lines(tmp_path / "p.jsonl", lines))
    assert [e.row for e in es.examples] == [1, 2]
    assert es.duplicates == {es.ids[0]: 2, es.ids[1]: 1}
    assert es.rejects == [] and es.n_rows_read == 5


def test_parquet_row_rejects(tmp_path: Path) -> None:
    rows = [good(0), {"instruction": "a", "input": "b", "output": None}, good(2)]
    rows[2]["output"] = " "
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    es = read(tmp_path / "p.parquet")
    assert [(r.row, r.reason) for r in es.rejects] == [
        (2, "field 'output' is null"),
        (3, "empty response"),
    ]
    pq.write_table(pa.table({"instruction": ["a"], "output": [3]}), tmp_path / "q.parquet")
    assert read(tmp_path / "q.parquet").rejects[0].reason == (
        "field 'output' must be a string, got int"
    )


def test_parquet_files_with_different_schemas(tmp_path: Path) -> None:
    pq.write_table(pa.Table.from_pylist([good(1)]), tmp_path / "a.parquet")
    pq.write_table(pa.Table.from_pylist([good(2, lang="en")]), tmp_path / "b.parquet")
    es = read(tmp_path)
    assert es.schema.names == ["instruction", "input", "output", "lang"]
    assert [e.record for e in es.examples] == [good(1), good(2, lang="en")]
    write_subset(es, es.ids, tmp_path / "out.parquet")
    assert pq.read_table(tmp_path / "out.parquet").to_pylist() == [
        {**good(1), "lang": None},
        good(2, lang="en"),
    ]
    pq.write_table(pa.table({"instruction": [1]}), tmp_path / "c.parquet")
    with pytest.raises(DeliftError, match=r"a\.parquet and .*c\.parquet have incompatible"):
        read(tmp_path)


def test_unreadable_parquet_names_file(tmp_path: Path) -> None:
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DeliftError, match=r"cannot read Parquet file .*bad\.parquet"):
        read(tmp_path / "bad.parquet")


def test_directory_input_sorted_and_filtered(tmp_path: Path) -> None:
    write_lines(tmp_path / "b.jsonl", [jline(good(2)), b"{"])
    write_lines(tmp_path / "a.jsonl", [jline(good(1))])
    write_lines(tmp_path / ".hidden.jsonl", [jline(good(3))])
    write_lines(tmp_path / "_tmp.jsonl", [jline(good(4))])
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / "sub").mkdir()
    es = read(tmp_path)
    assert [(Path(e.source).name, e.row) for e in es.examples] == [("a.jsonl", 1), ("b.jsonl", 1)]
    assert [(r.source, r.row) for r in es.rejects] == [(f"{tmp_path}/b.jsonl", 2)]


def test_file_uri_input(tmp_path: Path) -> None:
    write_lines(tmp_path / "p.jsonl", [jline(good(1)), jline(good(2))])
    uri = (tmp_path / "p.jsonl").as_uri()
    es = read(uri)
    assert len(es.examples) == 2 and es.examples[0].source == uri
    assert read(tmp_path.as_uri()).ids == es.ids


def test_bad_paths_raise_one_line(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("a,b\n")
    (tmp_path / "empty").mkdir()
    cases = {
        tmp_path / "nope.jsonl": "path not found",
        tmp_path / "empty": "no .jsonl, .ndjson or .parquet files under",
        tmp_path / "x.csv": "is not a .jsonl, .ndjson, .json or .parquet file",
    }
    for path, message in cases.items():
        with pytest.raises(DeliftError, match=message) as err:
            read(path)
        assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_mixed_directory_rejected(tmp_path: Path) -> None:
    write_lines(tmp_path / "a.jsonl", [jline(good(1))])
    pq.write_table(pa.Table.from_pylist([good(2)]), tmp_path / "b.parquet")
    with pytest.raises(DeliftError, match="mixes JSONL and Parquet"):
        read(tmp_path)


def test_demo_files_counts_and_disjoint() -> None:
    sets = {n: read(DEMO / f"demo_{n}.jsonl") for n in ("pool", "target", "existing", "test")}
    pool = sets["pool"]
    assert 250 <= len(pool.examples) <= 350
    assert len(pool.rejects) >= 6 and sum(pool.duplicates.values()) >= 5
    assert len({r.reason.split(":")[0] for r in pool.rejects}) >= 6
    assert len({e.record["kind"] for e in pool.examples}) == 8
    for name in ("target", "existing", "test"):
        s = sets[name]
        assert s.rejects == [] and s.duplicates == {} and len(s.examples) >= 20
    ids = {n: set(s.ids) for n, s in sets.items()}
    names = list(ids)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not ids[a] & ids[b], (a, b)
    assert max(len(x) for s in sets.values() for x in s.xs) < 120
