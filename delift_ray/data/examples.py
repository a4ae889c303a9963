"""Read example sets, validate every row, render (prompt x, response y), give content-hash ids.

Inputs are JSONL or Parquet files, a directory of them, or any pyarrow filesystem URI. Bad rows
are never dropped silently: each becomes a `Reject` naming its file, row and reason. Exact
duplicates (same x and y) are kept once and counted. The chosen subset is written back in the
input's own format and schema by `write_subset`.
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from delift_ray.config import DataConfig
from delift_ray.errors import DeliftError, first_line
from delift_ray.files import atomic_path, atomic_write_bytes

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
PARQUET_SUFFIXES = (".parquet", ".pq")
REJECT_SCHEMA = pa.schema([("source", pa.string()), ("row", pa.int64()), ("reason", pa.string())])
_BOM = b"\xef\xbb\xbf"
_CHUNK = 1 << 20
_BATCH = 65536


@dataclass
class Example:
    """One usable row: content-hash id, rendered prompt and response, and where it came from."""

    id: str
    x: str
    y: str
    source: str
    row: int
    record: dict[str, Any]


@dataclass
class Reject:
    """A row that cannot be used, with its file, 1-based row number and a short reason."""

    source: str
    row: int
    reason: str


@dataclass
class ExampleSet:
    """The usable examples of one input (unique by id, input order), its rejects and duplicates."""

    examples: list[Example]
    rejects: list[Reject]
    duplicates: dict[str, int]
    schema: pa.Schema | None
    format: str

    @property
    def ids(self) -> list[str]:
        """Example ids, in order."""
        return [e.id for e in self.examples]

    @property
    def xs(self) -> list[str]:
        """Prompts, in order."""
        return [e.x for e in self.examples]

    @property
    def ys(self) -> list[str]:
        """Responses, in order."""
        return [e.y for e in self.examples]

    @property
    def n_rows_read(self) -> int:
        """Rows read: usable + rejected + dropped duplicate copies (blank JSONL lines excluded)."""
        return len(self.examples) + len(self.rejects) + sum(self.duplicates.values())


class _BadRow(Exception):
    """A row-level problem; its message is the reject reason."""


# ---------------------------------------------------------------------------------------------
# public API


def example_id(x: str, y: str) -> str:
    """Content hash of a rendered (x, y): the first 16 hex chars of sha256(json([x, y]))."""
    return hashlib.sha256(json.dumps([x, y]).encode("ascii")).hexdigest()[:16]


def read_examples(cfg: DataConfig) -> ExampleSet:
    """Read, validate and render every row under cfg.path; raise DeliftError if unreadable."""
    render = _renderer(cfg)
    fs, files, kind = _list_files(cfg.path)
    schema = _parquet_schema(fs, files) if kind == "parquet" else None
    rows = _parquet_rows(fs, files) if kind == "parquet" else _jsonl_rows(fs, files)
    out = ExampleSet(examples=[], rejects=[], duplicates={}, schema=schema, format=kind)
    seen: set[str] = set()
    for source, row, record in rows:
        if isinstance(record, str):
            out.rejects.append(Reject(source, row, record))
            continue
        try:
            x, y = render(record)
        except _BadRow as e:
            out.rejects.append(Reject(source, row, str(e)))
            continue
        eid = example_id(x, y)
        if eid in seen:
            out.duplicates[eid] = out.duplicates.get(eid, 0) + 1
        else:
            seen.add(eid)
            out.examples.append(Example(eid, x, y, source, row, record))
    return out


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
    """Write the original records of `ids`, in that order, atomically, in the input's format."""
    by_id = {e.id: e.record for e in es.examples}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise KeyError(f"write_subset: unknown example id {missing[0]!r}")
    records = [by_id[i] for i in ids]
    if es.format == "parquet":
        table = pa.Table.from_pylist(records, schema=es.schema)
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
    else:
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        atomic_write_bytes(path, lines.encode("utf-8"))


# ---------------------------------------------------------------------------------------------
# files


def _list_files(path: str) -> tuple[pafs.FileSystem, list[tuple[str, str]], str]:
    """The filesystem, the (display name, fs path) of each input file, and the files' kind."""
    try:
        if "://" in path:
            fs, root = pafs.FileSystem.from_uri(path)
        else:
            fs, root = pafs.LocalFileSystem(), str(Path(path).expanduser().absolute())
        info = fs.get_file_info(root)
        if info.type == pafs.FileType.Directory:
            listing = fs.get_file_info(pafs.FileSelector(root))
        else:
            listing = []
    except (OSError, ValueError, pa.ArrowException) as e:
        raise DeliftError(f"data: cannot open {path}: {first_line(e)}") from None
    if info.type == pafs.FileType.NotFound:
        raise DeliftError(f"data: path not found: {path}")
    if info.type == pafs.FileType.File:
        kind = _kind(info.base_name)
        if kind is None:
            raise DeliftError(f"data: {path} is not a .jsonl, .json or .parquet file")
        return fs, [(path, root)], kind
    found = sorted(
        (f.path for f in listing if f.type == pafs.FileType.File and _listed(f.base_name)),
    )
    if not found:
        raise DeliftError(f"data: no .jsonl or .parquet files in {path}")
    kinds = {_kind(PurePosixPath(p).name) for p in found}
    if len(kinds) > 1:
        raise DeliftError(f"data: {path} mixes JSONL and Parquet files; use one kind per input")
    base = path.rstrip("/")
    return fs, [(f"{base}/{PurePosixPath(p).name}", p) for p in found], kinds.pop()


def _kind(name: str) -> str | None:
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    return None


def _listed(name: str) -> bool:
    """Files a directory input includes: *.jsonl and *.parquet, not hidden or _-prefixed ones."""
    suffix = PurePosixPath(name).suffix.lower()
    return suffix in (".jsonl", ".parquet") and not name.startswith((".", "_"))


def _jsonl_rows(
    fs: pafs.FileSystem, files: list[tuple[str, str]]
) -> Iterator[tuple[str, int, dict[str, Any] | str]]:
    """(source, line number, record or reject reason) for every non-blank line."""
    for source, fs_path in files:
        try:
            with fs.open_input_stream(fs_path) as stream:
                for lineno, line in enumerate(_lines(stream), start=1):
                    if lineno == 1 and line.startswith(_BOM):
                        line = line[len(_BOM) :]
                    if line.strip():
                        yield source, lineno, _parse_line(line.rstrip(b"\r"))
        except OSError as e:
            raise DeliftError(f"data: cannot read {source}: {first_line(e)}") from None


def _lines(stream: Any) -> Iterator[bytes]:
    """Split a byte stream on b'\\n', chunk by chunk."""
    tail = b""
    while chunk := stream.read(_CHUNK):
        parts = (tail + chunk).split(b"\n")
        tail = parts.pop()
        yield from parts
    if tail:
        yield tail


def _parse_line(line: bytes) -> dict[str, Any] | str:
    """The JSON object on a line, or the reason it is not one."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"invalid UTF-8 at byte {e.start}"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        return f"invalid JSON: {e.msg} (column {e.colno})"
    except RecursionError:
        return "invalid JSON: nested too deeply"
    except ValueError as e:  # valid JSON Python refuses, e.g. an integer over the digit limit
        return f"invalid JSON: {first_line(e)}"
    if not isinstance(value, dict):
        return f"not a JSON object (got {_type_name(value)})"
    return value


def _open_parquet(fs: pafs.FileSystem, source: str, fs_path: str) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(fs.open_input_file(fs_path))
    except (OSError, pa.ArrowException) as e:
        raise DeliftError(f"data: cannot read Parquet file {source}: {first_line(e)}") from None


def _parquet_schema(fs: pafs.FileSystem, files: list[tuple[str, str]]) -> pa.Schema:
    """The files' common schema (unified if they differ); DeliftError naming two that clash."""
    schemas = []
    for source, fs_path in files:
        pf = _open_parquet(fs, source, fs_path)
        schemas.append((source, pf.schema_arrow))
        pf.close()
    schema = schemas[0][1]
    for k, (source, other) in enumerate(schemas[1:], start=1):
        try:
            schema = pa.unify_schemas([schema, other], promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            first = next((s for s, sch in schemas[:k] if not _unifies(sch, other)), schemas[0][0])
            raise DeliftError(
                f"data: Parquet files {first} and {source} have incompatible schemas: "
                f"{first_line(e)}"
            ) from None
    return schema


def _unifies(a: pa.Schema, b: pa.Schema) -> bool:
    try:
        pa.unify_schemas([a, b], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return False
    return True


def _parquet_rows(
    fs: pafs.FileSystem, files: list[tuple[str, str]]
) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """(source, 1-based row number, record) for every row of every file."""
    for source, fs_path in files:
        pf = _open_parquet(fs, source, fs_path)
        row = 0
        try:
            for batch in pf.iter_batches(batch_size=_BATCH):
                for record in batch.to_pylist():
                    row += 1
                    yield source, row, record
        except (OSError, pa.ArrowException) as e:
            raise DeliftError(f"data: cannot read Parquet file {source}: {first_line(e)}") from None
        finally:
            pf.close()


# ---------------------------------------------------------------------------------------------
# rows -> (x, y)


def _renderer(cfg: DataConfig) -> Callable[[dict[str, Any]], tuple[str, str]]:
    """The function that turns a record into (x, y) or raises _BadRow with the reason."""
    if cfg.format == "messages":
        return lambda record: _render_messages(record, cfg.messages_field)
    prompt_names = {"instruction", "input", cfg.instruction_field, cfg.input_field}
    response_names = {"output", cfg.output_field}
    _check_template(cfg.prompt_template, prompt_names, "prompt_template")
    _check_template(cfg.response_template, response_names, "response_template")
    return lambda record: _render_alpaca(record, cfg)


def _check_template(template: str, names: set[str], key: str) -> None:
    """DeliftError unless `template` formats with exactly the given placeholder names."""
    try:
        used = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
        unknown = sorted(f for f in used if f not in names)
        if unknown:
            raise DeliftError(
                f"data: {key} uses unknown placeholder {{{unknown[0]}}} "
                f"(known: {', '.join('{' + n + '}' for n in sorted(names))})"
            )
        template.format_map(dict.fromkeys(names, ""))
    except (ValueError, KeyError, IndexError, AttributeError) as e:
        raise DeliftError(f"data: {key} is not a valid template: {e}") from None


def _render_alpaca(record: dict[str, Any], cfg: DataConfig) -> tuple[str, str]:
    """x = prompt_template(instruction, input), y = response_template(output)."""
    instruction = _text(record, cfg.instruction_field, required=True)
    inp = _text(record, cfg.input_field, required=False)
    output = _text(record, cfg.output_field, required=True)
    if not instruction.strip():
        raise _BadRow("empty instruction")
    if not output.strip():
        raise _BadRow("empty response")
    prompt = {"instruction": instruction, "input": inp}
    prompt.update({cfg.instruction_field: instruction, cfg.input_field: inp})
    response = {"output": output, cfg.output_field: output}
    return cfg.prompt_template.format_map(prompt), cfg.response_template.format_map(response)


def _render_messages(record: dict[str, Any], field: str) -> tuple[str, str]:
    """y = " " + the last (assistant) turn; x = each earlier turn as "{role}: {content}\\n".

    No "assistant:" cue is appended to x: the scoring templates frame the response themselves.
    """
    if field not in record or record[field] is None:
        raise _BadRow(f"missing field '{field}'")
    turns = record[field]
    if not isinstance(turns, list):
        raise _BadRow(f"field '{field}' must be a list of messages, got {_type_name(turns)}")
    if not turns:
        raise _BadRow(f"field '{field}' is empty")
    for k, turn in enumerate(turns):
        where = f"{field}[{k}]"
        if not isinstance(turn, dict):
            raise _BadRow(
                f"{where} must be an object with role and content, got {_type_name(turn)}"
            )
        for key in ("role", "content"):
            if key not in turn:
                raise _BadRow(f"{where} has no '{key}'")
            _check_string(turn[key], f"{where}.{key}")
    *context, last = turns
    if last["role"] != "assistant":
        raise _BadRow(f"last message must have role 'assistant', got {last['role']!r}")
    if not last["content"].strip():
        raise _BadRow("empty response")
    if not context:
        raise _BadRow("no messages before the assistant reply")
    return "".join(f"{t['role']}: {t['content']}\n" for t in context), " " + last["content"]


def _text(record: dict[str, Any], name: str, *, required: bool) -> str:
    """A string field; an optional one that is missing or null is ""."""
    if record.get(name) is None:
        if required:
            raise _BadRow(
                f"missing field '{name}'" if name not in record else f"field '{name}' is null"
            )
        return ""
    value = record[name]
    _check_string(value, f"field '{name}'")
    return value


def _check_string(value: Any, what: str) -> None:
    if not isinstance(value, str):
        raise _BadRow(f"{what} must be a string, got {_type_name(value)}")
    if "\x00" in value:
        raise _BadRow(f"{what} contains a NUL byte")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _BadRow(f"{what} contains an unpaired surrogate") from None


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__
