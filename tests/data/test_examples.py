"""Reading, validating and writing example sets: real files in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from delift_ray.config import DataConfig
from delift_ray.data.examples import (
    REJECT_SCHEMA,
    Reject,
    example_id,
    read_examples,
    reject_table,
    write_subset,
)
from delift_ray.errors import DeliftError
from delift_ray.files import atomic_path

DEMO = Path(__file__).resolve().parents[2] / "pipelines" / "data"


def good(i: int, **extra: object) -> dict:
    return {"instruction": f"Reverse word {i}.", "input": f"w{i}", "output": f"{i}w", **extra}


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def jline(obj: object) -> bytes:
    return json.dumps(obj).encode()


def read(path: Path | str, **kw: object) -> object:
    return read_examples(DataConfig(path=str(path), **kw))


# ---------------------------------------------------------------------------------------------
# JSONL rows


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


def test_braces_in_data_and_custom_fields(tmp_path: Path) -> None:
    row = {"question": "Fill {0} and {name}}", "context": "{", "answer": "{}"}
    es = read(
        write_lines(tmp_path / "p.jsonl", [jline(row)]),
        instruction_field="question",
        input_field="context",
        output_field="answer",
        prompt_template="Q: {question} | {input}\n",
        response_template=" {answer}",
    )
    assert es.xs == ["Q: Fill {0} and {name}} | {\n"] and es.ys == [" {}"]


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("Q: {query}\n", "unknown placeholder {query}"),
        ("Q: {instruction} {output}\n", "unknown placeholder {output}"),
        ("Q: {instruction\n", "not a valid template"),
    ],
)
def test_bad_prompt_template(tmp_path: Path, template: str, message: str) -> None:
    path = write_lines(tmp_path / "p.jsonl", [jline(good(1))])
    with pytest.raises(DeliftError, match="prompt_template") as err:
        read(path, prompt_template=template)
    assert message in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------
# messages


def test_messages_render_and_reject(tmp_path: Path) -> None:
    chat = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
    ]
    rows = [
        {"messages": chat, "id": 7},
        {"messages": "hi"},
        {"messages": []},
        {"messages": [{"role": "user", "content": "q"}, "a"]},
        {"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "a"}]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "user", "content": "a"}]},
        {"messages": [{"role": "assistant", "content": "a"}]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " "}]},
        {"messages": [{"role": "user"}, {"role": "assistant", "content": "a"}]},
        {"chat": chat},
    ]
    es = read(write_lines(tmp_path / "c.jsonl", [jline(r) for r in rows]), format="messages")
    assert es.xs == ["system: Be brief.\nuser: 2+2?\n"] and es.ys == [" 4"]
    assert es.examples[0].record == rows[0]
    assert {r.row: r.reason for r in es.rejects} == {
        2: "field 'messages' must be a list of messages, got str",
        3: "field 'messages' is empty",
        4: "messages[1] must be an object with role and content, got str",
        5: "messages[0].content must be a string, got int",
        6: "last message must have role 'assistant', got 'user'",
        7: "no messages before the assistant reply",
        8: "empty response",
        9: "messages[0] has no 'content'",
        10: "missing field 'messages'",
    }


def test_messages_from_parquet(tmp_path: Path) -> None:
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    pq.write_table(pa.Table.from_pylist([{"messages": chat, "lang": "en"}]), tmp_path / "c.pq")
    es = read(tmp_path / "c.pq", format="messages")
    assert es.xs == ["user: hi\n"] and es.ys == [" hello"] and es.format == "parquet"


# ---------------------------------------------------------------------------------------------
# Parquet


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


# ---------------------------------------------------------------------------------------------
# JSONL subset, inputs, errors


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
        tmp_path / "empty": "no .jsonl or .parquet files",
        tmp_path / "x.csv": "is not a .jsonl, .json or .parquet file",
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


def test_reject_table() -> None:
    empty = reject_table([])
    assert empty.schema == REJECT_SCHEMA and empty.num_rows == 0
    table = reject_table([Reject("a.jsonl", 3, "empty response")])
    assert table.to_pylist() == [{"source": "a.jsonl", "row": 3, "reason": "empty response"}]


# ---------------------------------------------------------------------------------------------
# atomic writes


def test_atomic_path_error_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "out.parquet"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]


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


# ---------------------------------------------------------------------------------------------
# shipped demo data


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
