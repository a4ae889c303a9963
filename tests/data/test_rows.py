"""Input kinds users have: JSON arrays, gzip / zstd JSONL, NDJSON, Hive-partitioned Parquet trees
and Hugging Face save_to_disk folders; each with rejects, and the ids plain JSONL gives."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from delift_ray.data.examples import ExampleSet, type_name
from delift_ray.data.write import write_subset
from delift_ray.errors import DeliftError
from tests.data.helpers import good, jline, read, write_lines

BAD = {"instruction": "a", "output": None}  # a reject in every kind: "field 'output' is null"


def plain_ids(tmp_path: Path, records: list[dict]) -> dict[str, str]:
    """instruction -> id of the usable rows, read from a plain JSONL file."""
    es = read(write_lines(tmp_path / "plain" / "p.jsonl", [jline(r) for r in records]))
    return by_instruction(es)


def by_instruction(es: ExampleSet) -> dict[str, str]:
    return {e.record["instruction"]: e.id for e in es.examples}


@pytest.fixture(autouse=True)
def plain_dir(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()


def one_line_error(path: Path | str, match: str) -> str:
    with pytest.raises(DeliftError, match=match) as err:
        read(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith("data: ")
    return message


# ---------------------------------------------------------------------------------------------
# JSON arrays


def test_json_array_elements_are_rows(tmp_path: Path) -> None:
    elements = [good(0), 3, good(1), "x", [good(2)], None, BAD, good(3, extra={"k": [1]})]
    text = json.dumps(elements, indent=2)
    path = tmp_path / "p.json"
    path.write_bytes(b"\xef\xbb\xbf \n\t" + text.encode())
    es = read(path)
    assert [(r.row, r.reason) for r in es.rejects] == [
        (2, "not a JSON object (got int)"),
        (4, "not a JSON object (got str)"),
        (5, "not a JSON object (got list)"),
        (6, "not a JSON object (got null)"),
        (7, "field 'output' is null"),
    ]
    assert all(r.source == str(path) for r in es.rejects)
    assert [(e.row, e.record) for e in es.examples] == [
        (1, good(0)),
        (3, good(1)),
        (8, good(3, extra={"k": [1]})),
    ]
    assert es.format == "jsonl" and es.schema is None
    assert by_instruction(es) == plain_ids(tmp_path, [good(0), good(1), good(3, extra={"k": [1]})])
    write_subset(es, es.ids[::-1], tmp_path / "s.jsonl")
    lines = (tmp_path / "s.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [good(3, extra={"k": [1]}), good(1), good(0)]


def test_json_file_of_lines_is_still_jsonl(tmp_path: Path) -> None:
    es = read(write_lines(tmp_path / "p.json", [jline(good(0)), b"[1, 2]", b"{", jline(good(1))]))
    assert [(r.row, r.reason.split(":")[0]) for r in es.rejects] == [
        (2, "not a JSON object (got list)"),
        (3, "invalid JSON"),
    ]
    assert [e.row for e in es.examples] == [1, 4]
    (tmp_path / "empty.json").write_bytes(b" \n")
    assert read(tmp_path / "empty.json").n_rows_read == 0
    (tmp_path / "none.json").write_bytes(b"[ ]\n")
    assert read(tmp_path / "none.json").n_rows_read == 0


INVALID_ARRAYS = {
    "trailing-comma": (
        b'[{"a": 1}, {"a": 2},]',
        r"\(element 3\): parse error: unallowed token at this point in JSON text "
        r"""near '\[\{"a": 1\}, \{"a": 2\},\]'$""",
    ),
    "truncated": (b'[{"a": 1},\n {"a": 2', r"\(element 2\): parse error: premature EOF$"),
    "no-comma": (
        b'[{"a": 1} {"a": 2}]',
        r"\(element 2\): parse error: after array element, I expect ',' or '\]' near '\[\{",
    ),
    "unclosed": (b'[{"a": 1}', r"\(element 1\): parse error: premature EOF$"),
    "extra": (
        b'[{"a": 1}] {"b": 2}',
        r"""\(element 1\): parse error: trailing garbage near '\[\{"a": 1\}\] \{"b": 2\}'$""",
    ),
    "extra-bracket": (b"[]]", r"\(element 1\): parse error: trailing garbage near '\[\]\]'$"),
    "deep": (b"[" + b"[" * 100_000 + b"]" * 100_000 + b"]", r"\(element 1\): nested over 512 "),
    "deep-object": (
        b'[{"a": 1}, ' + b'{"a": ' * 600 + b"1" + b"}" * 600 + b"]",
        r"\(element 2\): nested over 512 levels deep$",
    ),
    "long-int": (b"[" + b"9" * 5000 + b"]", r"\(element 1\): Unexpected symbol '9{100,}…9+' at 1$"),
    "long-int-late": (
        b'[{"a": 1}, {"b": 123456789012345678901234567890}, {"c": ' + b"9" * 5000 + b"}]",
        r"\(element 3\): Unexpected symbol '9{100,}…9+' at 56$",
    ),
    "huge-int": (b"[" + b"9" * (20 << 20) + b"]", r"\(element 1\): Unexpected symbol '9{100,}…"),
    "float-overflow": (
        b'[{"a": 1}, {"x": 1E400}]',
        r"\(element 2\): Unexpected symbol '1E400' at 17$",
    ),
    "nan": (
        b'[{"a": 1}, {"x": NaN}]',
        r"\(element 2\): lexical error: invalid char in json text near .*NaN.* "
        r"\(NaN and Infinity are not JSON\)$",
    ),
    "infinity": (b'[{"a": 1}, -Infinity]', r"\(element 2\): .* \(NaN and Infinity are not JSON\)$"),
    "no-colon": (
        b'[{"instruction" "a"}, ' + b", ".join(jline(good(i)) for i in range(9999)) + b"]",
        r"\(element 1\): parse error: object key and value must be separated by a colon",
    ),
    "control-char": (b'[{"a": "x\ny"}]', r"\(element 1\): lexical error: invalid character inside"),
    "bad-escape": (
        b'[{"a": "\\x"}]',
        r"\(element 1\): lexical error: inside a string, '\\' occurs",
    ),
    "comment": (b"[1, /* c */ 2]", r"\(element 2\): lexical error: probable comment found"),
    "utf8": (
        b'[{"a": "caf\xe9"}]',
        r"""\(element 1\): lexical error: invalid bytes in UTF8 string near '\[\{"a": "caf.*$""",
    ),
    "utf8-overlong": (
        b'[{"a": 1}, {"a": "\xc0\xaf"}]',
        r"\(element 2\): a string is not valid UTF-8 \(invalid start byte\)$",
    ),
    "lone-low-surrogate": (b'[{"a": "\\ude00"}]', r"\(element 1\): a string is not valid UTF-8 "),
}


@pytest.mark.parametrize(("content", "message"), INVALID_ARRAYS.values(), ids=list(INVALID_ARRAYS))
def test_invalid_json_array_is_one_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "p.json"
    path.write_bytes(content)
    got = one_line_error(path, message)
    assert got.startswith(f"data: {path} is not a valid JSON array (element ")


NUMBERS = [
    "0", "-0", "-0.0", "1.5", "-1.5e-3", "1E+2", "12.5E-1", "1e-400", "4.9e-324", "0.1",
    "1.7976931348623157e308", "9223372036854775807", "-9223372036854775807", "1e2",
    "0.30000000000000004", "3." + "1" * 40,
]  # fmt: skip
STRINGS = [
    r'"\ud83d\ude00 \u00e9 \" \\ ] , \/ \b\f\n\r\t"', '"é😀\u2028 ]"', r'"\u0000"', '""',
]  # fmt: skip
VALUES = [*NUMBERS, *STRINGS, "true", "false", "null", '[[], {}, [1, [2, {"a": [null]}]]]']
BIG_INTS = ["-9223372036854775808", "9223372036854775808", "-" + "9" * 4300, "1" + "0" * 30]


def record_text(k: int, value: str) -> str:
    """A usable element whose field v is the JSON text `value`."""
    return f'{{"instruction": "i{k}", "input": "", "output": "o", "v": {value}}}'


def test_json_array_values_are_what_json_gives(tmp_path: Path) -> None:
    values = [*VALUES, '{"a": 1, "a": 2}']
    text = "[\n" + ",\n".join(VALUES + [record_text(k, v) for k, v in enumerate(values)]) + "\n]"
    path = tmp_path / "p.json"
    path.write_text(text, encoding="utf-8")
    want, n = json.loads(text), len(VALUES)
    es = read(path)
    assert [(r.row, r.reason) for r in es.rejects] == [
        (k, f"not a JSON object (got {type_name(v)})") for k, v in enumerate(want[:n], start=1)
    ]
    assert [(e.row, e.record) for e in es.examples] == list(enumerate(want[n:], start=n + 1))
    assert [repr(e.record["v"]) for e in es.examples] == [repr(w["v"]) for w in want[n:]]


def test_json_array_lone_high_surrogate_reads_as_question_mark(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text("[" + record_text(0, r'"a\ud83d b"') + "]")  # json would keep "\ud83d"
    assert read(path).examples[0].record["v"] == "a? b"


def test_json_array_with_big_integers_is_read_exactly(tmp_path: Path) -> None:
    elements = [record_text(0, "1"), *(record_text(k, v) for k, v in enumerate(BIG_INTS, 1))]
    elements.insert(3, "7")
    text = "[" + ", ".join([*elements, record_text(9, "2")]) + "]"
    path = tmp_path / "p.json.gz"
    path.write_bytes(gzip.compress(b"\xef\xbb\xbf" + text.encode()))
    want = json.loads(text)
    es = read(path)
    assert [(r.row, r.reason) for r in es.rejects] == [(4, "not a JSON object (got int)")]
    assert [(e.row, e.record) for e in es.examples] == [
        (k, w) for k, w in enumerate(want, start=1) if isinstance(w, dict)
    ]
    assert [type(e.record["v"]) for e in es.examples] == [int] * 6


def test_large_json_array_element(tmp_path: Path) -> None:
    pad = json.dumps('x\\"é😀\n' * (1 << 20))
    big = f'{{"instruction": "a", "input": {pad}, "output": "b", "n": 1.{"5" * (3 << 20)}}}'
    text = f"[{jline(good(0)).decode()}, {big}, {jline(good(2)).decode()}]"
    path = tmp_path / "p.json"
    path.write_text(text, encoding="utf-8")
    assert [e.record for e in read(path).examples] == json.loads(text)
    path.write_text(f"[{jline(good(0)).decode()}, {jline(good(1, pad='x' * (65 << 20))).decode()}]")
    one_line_error(path, r"\(element 2\): a string, number or run of blanks is over 64 MiB$")


# ---------------------------------------------------------------------------------------------
# compressed and NDJSON


def zstd_bytes(data: bytes) -> bytes:
    """A zstd frame, written by pyarrow's own compressed stream."""
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as out:
        out.write(data)
    return sink.getvalue().to_pybytes()


COMPRESS = {"gz": gzip.compress, "zst": zstd_bytes, "zstd": zstd_bytes}
RECORDS = [good(0), BAD, good(1), good(2, lang="fr")]


@pytest.mark.parametrize(
    "name",
    ["p.jsonl.gz", "p.json.gz", "p.ndjson.gz", "p.jsonl.zst", "p.jsonl.zstd", "p.json.zst"],
)
def test_compressed_inputs(tmp_path: Path, name: str) -> None:
    lines = b"".join(jline(r) + b"\n" for r in RECORDS)
    array = json.dumps(RECORDS).encode()
    data = array if ".json." in name else lines
    path = tmp_path / name
    path.write_bytes(COMPRESS[name.rsplit(".", 1)[1]](data))
    es = read(path)
    assert [(r.source, r.row, r.reason) for r in es.rejects] == [
        (str(path), 2, "field 'output' is null")
    ]
    assert [e.record for e in es.examples] == [RECORDS[0], RECORDS[2], RECORDS[3]]
    assert by_instruction(es) == plain_ids(tmp_path, RECORDS)
    assert es.format == "jsonl"


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("p.jsonl.gz", b"not gzip at all"),
        ("p.jsonl.gz", gzip.compress(b"".join(jline(good(i)) + b"\n" for i in range(999)))[:900]),
        ("p.json.gz", gzip.compress(json.dumps([good(i) for i in range(999)]).encode())[:900]),
        ("p.jsonl.zst", b"not zstd at all"),
        ("p.ndjson.zstd", zstd_bytes(b"".join(jline(good(i)) + b"\n" for i in range(999)))[:900]),
    ],
    ids=["gz-garbage", "gz-truncated", "json-gz-truncated", "zst-garbage", "zst-truncated"],
)
def test_corrupt_compressed_file_is_one_line(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    assert str(path) in one_line_error(path, r"^data: cannot read .*p\.\w+\.\w+: ")


def test_ndjson_and_compressed_files_in_a_directory(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    write_lines(d / "a.ndjson", [jline(good(0)), jline(BAD)])
    write_lines(d / "b.jsonl", [jline(good(1))])
    (d / "c.ndjson.gz").write_bytes(gzip.compress(jline(good(2)) + b"\n"))
    (d / "d.jsonl.zst").write_bytes(zstd_bytes(jline(good(3)) + b"\n"))
    (d / "meta.json").write_text(json.dumps([good(9)]))  # .json in a folder: metadata, not read
    (d / "_tmp.ndjson").write_text(json.dumps(good(8)))
    es = read(d)
    assert [(Path(e.source).name, e.row) for e in es.examples] == [
        ("a.ndjson", 1),
        ("b.jsonl", 1),
        ("c.ndjson.gz", 1),
        ("d.jsonl.zst", 1),
    ]
    assert [(r.source, r.row) for r in es.rejects] == [(f"{d}/a.ndjson", 2)]
    assert by_instruction(es) == plain_ids(tmp_path, [good(i) for i in range(4)])


def test_unsupported_names_are_one_line(tmp_path: Path) -> None:
    for name in ("p.parquet.gz", "p.txt.gz", "p.jsonl.bz2"):
        (tmp_path / name).write_bytes(b"")
        one_line_error(tmp_path / name, "is not a .jsonl, .ndjson, .json or .parquet file")
    (tmp_path / "data-00000-of-00001.arrow").write_bytes(b"")
    message = one_line_error(tmp_path / "data-00000-of-00001.arrow", "is not a")
    assert message.endswith("for a Hugging Face save_to_disk folder, give the folder")


# ---------------------------------------------------------------------------------------------
# Parquet trees


def test_hive_partitioned_parquet_tree(tmp_path: Path) -> None:
    d = tmp_path / "d"
    records = [good(i, lang=lang) for i, lang in enumerate(["en", "fr", "en", "de", "fr"])]
    records.append({**BAD, "lang": "en"})
    pq.write_to_dataset(pa.Table.from_pylist(records), d, partition_cols=["lang"])
    (d / "_SUCCESS").write_bytes(b"")
    pq.write_table(pa.Table.from_pylist([good(9)]), d / "lang=en" / ".hidden.parquet")
    (d / "_temporary" / "lang=en").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([good(8)]), d / "_temporary" / "lang=en" / "x.parquet")
    es = read(d)
    assert [e.record["lang"] for e in es.examples] == ["de", "en", "en", "fr", "fr"]
    assert [e.record for e in es.examples] == sorted(records[:5], key=lambda r: r["lang"])
    assert [(Path(r.source).parent.name, r.row) for r in es.rejects] == [("lang=en", 3)]
    assert es.rejects[0].source.startswith(f"{d}/lang=en/") and es.rejects[0].source.endswith(
        ".parquet"
    )
    assert es.schema.names == ["instruction", "input", "output", "lang"]
    assert es.schema.field("lang").type == pa.string()
    assert by_instruction(es) == plain_ids(tmp_path, records)
    write_subset(es, es.ids, tmp_path / "s.parquet")
    back = pq.read_table(tmp_path / "s.parquet")
    assert back.schema == es.schema and back.to_pylist() == [e.record for e in es.examples]


def write_parquet(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(records), path)


def test_nested_parquet_files_read_in_path_order(tmp_path: Path) -> None:
    d = tmp_path / "d"
    paths = ["b.parquet", "a/z.parquet", "a/b/c.parquet", "year=2024/m=01%2F02/p.parquet"]
    for i, rel in enumerate(paths):
        write_parquet(d / rel, [good(i)])
    es = read(d)
    names = [e.source.removeprefix(f"{d}/") for e in es.examples]
    assert names == ["a/b/c.parquet", "a/z.parquet", "b.parquet", paths[3]]
    assert es.examples[0].record == good(2)
    assert es.examples[-1].record == {**good(3), "year": "2024", "m": "01/02"}
    write_parquet(tmp_path / "n" / "k=__HIVE_DEFAULT_PARTITION__" / "p.parquet", [good(0)])
    write_parquet(tmp_path / "n" / "k=v" / "p.parquet", [good(1)])
    assert [e.record["k"] for e in read(tmp_path / "n").examples] == [None, "v"]


def test_partition_key_that_is_also_a_column(tmp_path: Path) -> None:
    write_parquet(tmp_path / "d" / "lang=en" / "p.parquet", [good(0, lang="fr")])
    one_line_error(tmp_path / "d", r"p\.parquet has a column 'lang' and a partition folder lang=")


def test_nested_jsonl_tree_keeps_rows_as_written(tmp_path: Path) -> None:
    d = tmp_path / "d"
    (d / "lang=en").mkdir(parents=True)
    write_lines(d / "lang=en" / "p.jsonl", [jline(good(1))])
    write_lines(d / "a.jsonl", [jline(good(0))])
    es = read(d)
    assert [e.record for e in es.examples] == [good(0), good(1)]
    assert es.examples[1].source == f"{d}/lang=en/p.jsonl"
    pq.write_table(pa.Table.from_pylist([good(2)]), d / "lang=en" / "q.parquet")
    one_line_error(d, "mixes JSONL and Parquet files")


# ---------------------------------------------------------------------------------------------
# Hugging Face save_to_disk


def hf_save(records: list[dict], path: Path, **kw: object) -> Path:
    datasets = pytest.importorskip("datasets", reason="the dev extra's `datasets` is not installed")
    datasets.disable_progress_bars()
    datasets.Dataset.from_list(records).save_to_disk(str(path), **kw)
    return path


def test_hf_save_to_disk_folder(tmp_path: Path) -> None:
    records = [good(i, n=i) for i in range(7)]
    records[4] = {**BAD, "input": "w4", "n": 4}
    d = hf_save(records, tmp_path / "ds", num_shards=3)
    es = read(d)
    assert [e.record for e in es.examples] == records[:4] + records[5:]
    assert [(Path(r.source).name, r.row, r.reason) for r in es.rejects] == [
        ("data-00001-of-00003.arrow", 2, "field 'output' is null")
    ]
    assert es.rejects[0].source == f"{d}/data-00001-of-00003.arrow"
    assert es.format == "parquet" and es.schema.names == ["instruction", "input", "output", "n"]
    assert by_instruction(es) == plain_ids(tmp_path, records)
    write_subset(es, es.ids[::-1], tmp_path / "s.parquet")
    back = pq.read_table(tmp_path / "s.parquet")
    assert back.schema == es.schema and back.to_pylist() == [e.record for e in es.examples][::-1]
    assert read(d.as_uri()).ids == es.ids


def test_hf_dataset_dict_and_broken_folders_are_one_line(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets", reason="the dev extra's `datasets` is not installed")
    datasets.disable_progress_bars()
    split = datasets.Dataset.from_list([good(0)])
    datasets.DatasetDict({"train": split, "test": split}).save_to_disk(str(tmp_path / "dd"))
    message = one_line_error(tmp_path / "dd", "is a Hugging Face DatasetDict")
    assert message.endswith(
        f"(splits: train, test); point at one split's folder, e.g. {tmp_path}/dd/train"
    )
    assert len(read(tmp_path / "dd" / "train").examples) == 1
    shard = tmp_path / "dd" / "test" / "data-00000-of-00001.arrow"
    shard.write_bytes(shard.read_bytes()[:-100])
    one_line_error(
        tmp_path / "dd" / "test", r"cannot read Arrow file .*test/data-00000-of-00001\.arrow: "
    )
    (tmp_path / "dd" / "train" / "state.json").write_text("{")
    one_line_error(tmp_path / "dd" / "train", r"cannot read .*train/state\.json: ")
    (tmp_path / "dd" / "train" / "state.json").write_text('{"_data_files": [{"filename": "../x"}]}')
    one_line_error(tmp_path / "dd" / "train", r"train/state\.json lists no data files")
