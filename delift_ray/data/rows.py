"""The rows of an input: JSONL / NDJSON or JSON-array files (plain, gzip or zstd), Parquet files,
a directory tree of them, a Hugging Face `save_to_disk` folder, or any pyarrow filesystem URI.
Each row is a record, or the reason it is not one (invalid JSON or UTF-8, not an object); a JSON
array's elements are read by json_array.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from delift_ray import storage
from delift_ray.data.examples import type_name
from delift_ray.data.json_array import array_values
from delift_ray.errors import DeliftError, first_line

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
PARQUET_SUFFIXES = (".parquet", ".pq")
COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}
HF_STATE, HF_DICT = "state.json", "dataset_dict.json"
_BOM = b"\xef\xbb\xbf"
_CHUNK = 1 << 20
_BATCH = 65536
_JSON_WS = b" \t\r\n"
_HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
_KINDS_TEXT = "a .jsonl, .ndjson, .json or .parquet file (JSON ones may end in .gz, .zst or .zstd)"
Row = tuple[str, int, dict[str, Any] | str]  # (source, 1-based row, record or reject reason)


@dataclass(frozen=True)
class InputFile:
    """One file of an input: the name rejects show, its filesystem path, its Hive partition."""

    source: str
    path: str
    partition: dict[str, str | None] = field(default_factory=dict)


def input_rows(path: str) -> tuple[Iterator[Row], pa.Schema | None, str]:
    """Every row under `path`, its Arrow schema (None for JSON) and the format to write it back."""
    fs, files, kind = _list_files(path)
    if kind == "arrow":
        return _arrow_rows(fs, files), _arrow_schema(fs, files), "parquet"
    if kind == "parquet":
        return _parquet_rows(fs, files), _parquet_schema(fs, files), kind
    return _jsonl_rows(fs, files), None, kind


# ---------------------------------------------------------------------------------------------
# finding the files


def _list_files(path: str) -> tuple[pafs.FileSystem, list[InputFile], str]:
    """The filesystem, the input's files in reading order, and their kind."""
    fs, root, info = _open_root(path)
    if info.type == pafs.FileType.NotFound:
        raise DeliftError(f"data: path not found: {storage.display(path)}")
    if info.type == pafs.FileType.File:
        kind = _kind(info.base_name)
        if kind is None:
            raise DeliftError(f"data: {path} is not {_KINDS_TEXT}{_arrow_hint(info.base_name)}")
        return fs, [InputFile(storage.display(path), root)], kind
    base = storage.display(path).rstrip("/")
    names = {f.base_name for f in _listing(fs, root, path, recursive=False)}
    if HF_DICT in names:
        raise DeliftError(_dataset_dict_message(fs, root, base))
    if HF_STATE in names:
        return fs, _hf_files(fs, root, base), "arrow"
    return _tree_files(fs, root, path, base)


def _open_root(path: str) -> tuple[pafs.FileSystem, str, pafs.FileInfo]:
    """The filesystem of `path`, its path there, and what it is."""
    fs, root = storage.resolve(path, "data path")
    try:
        return fs, root, fs.get_file_info(root)
    except (OSError, ValueError, pa.ArrowException) as e:
        raise DeliftError(f"data: cannot open {storage.display(path)}: {first_line(e)}") from None


def _listing(fs: pafs.FileSystem, root: str, path: str, recursive: bool) -> list[pafs.FileInfo]:
    """The entries of directory `root` (all of its tree if recursive)."""
    try:
        return list(fs.get_file_info(pafs.FileSelector(root, recursive=recursive)))
    except (OSError, ValueError, pa.ArrowException) as e:
        raise DeliftError(f"data: cannot open {path}: {first_line(e)}") from None


def _tree_files(
    fs: pafs.FileSystem, root: str, path: str, base: str
) -> tuple[pafs.FileSystem, list[InputFile], str]:
    """Every data file under a directory, sorted by relative path, and their one kind."""
    prefix = root.rstrip("/") + "/"
    found = sorted(
        PurePosixPath(f.path[len(prefix) :]).parts
        for f in _listing(fs, root, path, recursive=True)
        if f.type == pafs.FileType.File and _listed(f.path[len(prefix) :])
    )
    if not found:
        raise DeliftError(f"data: no .jsonl, .ndjson or .parquet files under {path}")
    kinds = {_kind(parts[-1]) or "" for parts in found}  # _listed: never ""
    if len(kinds) > 1:
        raise DeliftError(f"data: {path} mixes JSONL and Parquet files; use one kind per input")
    kind = kinds.pop()
    files = [
        InputFile(
            f"{base}/{'/'.join(parts)}",
            prefix + "/".join(parts),
            _partition(parts) if kind == "parquet" else {},
        )
        for parts in found
    ]
    return fs, files, kind


def _split_name(name: str) -> tuple[str, str | None]:
    """A file name's data suffix (lower case) and its compression (None if not compressed)."""
    path = PurePosixPath(name.lower())
    compression = COMPRESSIONS.get(path.suffix)
    if compression is not None:
        path = path.with_suffix("")
    return path.suffix, compression


def _kind(name: str) -> str | None:
    """'jsonl' or 'parquet' for a file name a single-file input accepts, else None."""
    suffix, compression = _split_name(name)
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in PARQUET_SUFFIXES and compression is None:
        return "parquet"
    return None


def _listed(rel: str) -> bool:
    """Files a directory includes: .jsonl, .ndjson (maybe compressed) and .parquet, at any depth,
    not hidden or _-prefixed, nor inside a hidden or _-prefixed folder."""
    parts = PurePosixPath(rel).parts
    if any(p.startswith((".", "_")) for p in parts):
        return False
    suffix, compression = _split_name(parts[-1])
    return suffix in (".jsonl", ".ndjson") or (suffix == ".parquet" and compression is None)


def _partition(parts: tuple[str, ...]) -> dict[str, str | None]:
    """The Hive partition of a file: its `key=value` folders, values URL-decoded."""
    out: dict[str, str | None] = {}
    for part in parts[:-1]:
        key, eq, value = part.partition("=")
        if key and eq:
            text = unquote(value)
            out[unquote(key)] = None if text == _HIVE_NULL else text
    return out


def _arrow_hint(name: str) -> str:
    """A hint for a Hugging Face Arrow shard given as the input."""
    if name.lower().endswith(".arrow"):
        return "; for a Hugging Face save_to_disk folder, give the folder"
    return ""


def _read_json(fs: pafs.FileSystem, fs_path: str, source: str) -> Any:
    """A small JSON file's value; DeliftError naming the file if it cannot be read."""
    try:
        with fs.open_input_stream(fs_path) as stream:
            return json.loads(stream.read().decode("utf-8"))
    except (OSError, ValueError, pa.ArrowException) as e:
        raise DeliftError(f"data: cannot read {source}: {first_line(e)}") from None


def _hf_files(fs: pafs.FileSystem, root: str, base: str) -> list[InputFile]:
    """The Arrow shards of a `datasets` save_to_disk folder, in the order state.json lists them."""
    state = _read_json(fs, f"{root.rstrip('/')}/{HF_STATE}", f"{base}/{HF_STATE}")
    entries = state.get("_data_files") if isinstance(state, dict) else None
    listed = entries if isinstance(entries, list) else []
    names = [e.get("filename") for e in listed if isinstance(e, dict)]
    if not names or not all(isinstance(n, str) and n and "/" not in n for n in names):
        raise DeliftError(f"data: {base}/{HF_STATE} lists no data files (_data_files)")
    return [InputFile(f"{base}/{n}", f"{root.rstrip('/')}/{n}") for n in names]


def _dataset_dict_message(fs: pafs.FileSystem, root: str, base: str) -> str:
    """The error for a `datasets` DatasetDict folder: point at one split."""
    value = _read_json(fs, f"{root.rstrip('/')}/{HF_DICT}", f"{base}/{HF_DICT}")
    splits = value.get("splits") if isinstance(value, dict) else None
    names = [s for s in splits if isinstance(s, str)] if isinstance(splits, list) else []
    example = f", e.g. {base}/{names[0]}" if names else ""
    listed = f" (splits: {', '.join(names)})" if names else ""
    return (
        f"data: {base} is a Hugging Face DatasetDict{listed}; point at one split's folder{example}"
    )


# ---------------------------------------------------------------------------------------------
# JSONL and JSON arrays


def _jsonl_rows(fs: pafs.FileSystem, files: list[InputFile]) -> Iterator[Row]:
    """(source, row, record or reject reason): per line, or per element of a JSON array."""
    for file in files:
        suffix, compression = _split_name(PurePosixPath(file.path).name)
        try:
            with fs.open_input_stream(file.path, compression=compression) as stream:
                head, chunks = _head(stream)
                if suffix == ".json" and head.removeprefix(_BOM).lstrip(_JSON_WS)[:1] == b"[":
                    rows = _array_rows(fs, file, compression, head, stream)
                else:
                    rows = _line_rows(chunks)
                for row, record in rows:
                    yield file.source, row, record
        except (OSError, pa.ArrowException) as e:
            raise DeliftError(f"data: cannot read {file.source}: {first_line(e)}") from None


def _chunks(stream: Any) -> Iterator[bytes]:
    """A byte stream, chunk by chunk."""
    while chunk := stream.read(_CHUNK):
        yield chunk


def _head(stream: Any) -> tuple[bytes, Iterator[bytes]]:
    """The stream's first chunks, through its first non-whitespace byte, and all of its chunks."""
    chunks = _chunks(stream)
    head = b""
    for chunk in chunks:
        head += chunk
        if head.removeprefix(_BOM).lstrip(_JSON_WS):
            break
    return head, _prepend(head, chunks)


def _prepend(head: bytes, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """`head`, then the rest of `chunks`."""
    if head:
        yield head
    yield from chunks


def _line_rows(chunks: Iterator[bytes]) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line number, record or reject reason) for every non-blank line."""
    for lineno, line in enumerate(_lines(chunks), start=1):
        if lineno == 1 and line.startswith(_BOM):
            line = line[len(_BOM) :]
        if line.strip():
            yield lineno, _parse_line(line.rstrip(b"\r"))


def _lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Split byte chunks on b'\\n'."""
    tail = b""
    for chunk in chunks:
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
    return _record(value)


def _array_rows(
    fs: pafs.FileSystem, file: InputFile, compression: str | None, head: bytes, stream: Any
) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(1-based position, record or reject reason) for each element of a top-level JSON array."""
    reopen = partial(fs.open_input_stream, file.path, compression=compression)
    for index, value in array_values(file.source, head, stream, reopen):
        yield index, _record(value)


def _record(value: Any) -> dict[str, Any] | str:
    """A parsed JSON value as a record, or the reason it is not one."""
    if not isinstance(value, dict):
        return f"not a JSON object (got {type_name(value)})"
    return value


# ---------------------------------------------------------------------------------------------
# Parquet


def _open_parquet(fs: pafs.FileSystem, file: InputFile) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(fs.open_input_file(file.path))
    except (OSError, pa.ArrowException) as e:
        raise DeliftError(
            f"data: cannot read Parquet file {file.source}: {first_line(e)}"
        ) from None


def _parquet_schema(fs: pafs.FileSystem, files: list[InputFile]) -> pa.Schema:
    """The files' common schema with their partition columns (strings) after the file's own."""
    schemas = []
    for file in files:
        pf = _open_parquet(fs, file)
        schema = pf.schema_arrow
        pf.close()
        clash = [k for k in file.partition if k in schema.names]
        if clash:
            raise DeliftError(
                f"data: {file.source} has a column {clash[0]!r} and a partition folder "
                f"{clash[0]}=...; rename one"
            )
        for key in file.partition:
            schema = schema.append(pa.field(key, pa.string()))
        schemas.append((file.source, schema))
    return _unified(schemas, "Parquet")


def _unified(schemas: list[tuple[str, pa.Schema]], what: str) -> pa.Schema:
    """One schema for all (unified if they differ); DeliftError naming two files that clash."""
    schema = schemas[0][1]
    for k, (source, other) in enumerate(schemas[1:], start=1):
        try:
            schema = pa.unify_schemas([schema, other], promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            first = next((s for s, sch in schemas[:k] if not _unifies(sch, other)), schemas[0][0])
            raise DeliftError(
                f"data: {what} files {first} and {source} have incompatible schemas: "
                f"{first_line(e)}"
            ) from None
    return schema


def _unifies(a: pa.Schema, b: pa.Schema) -> bool:
    try:
        pa.unify_schemas([a, b], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return False
    return True


def _parquet_rows(fs: pafs.FileSystem, files: list[InputFile]) -> Iterator[Row]:
    """(source, 1-based row number, record and its partition fields) for every row."""
    for file in files:
        pf = _open_parquet(fs, file)
        row = 0
        try:
            for batch in pf.iter_batches(batch_size=_BATCH):
                for record in batch.to_pylist():
                    row += 1
                    yield file.source, row, {**record, **file.partition}
        except (OSError, pa.ArrowException) as e:
            raise DeliftError(
                f"data: cannot read Parquet file {file.source}: {first_line(e)}"
            ) from None
        finally:
            pf.close()


# ---------------------------------------------------------------------------------------------
# Hugging Face save_to_disk (Arrow IPC streams)


def _arrow_schema(fs: pafs.FileSystem, files: list[InputFile]) -> pa.Schema:
    """The common schema of a save_to_disk folder's shards."""
    schemas = []
    for file in files:
        try:
            with fs.open_input_stream(file.path) as stream:
                schemas.append((file.source, pa.ipc.open_stream(stream).schema))
        except (OSError, pa.ArrowException) as e:
            raise DeliftError(
                f"data: cannot read Arrow file {file.source}: {first_line(e)}"
            ) from None
    return _unified(schemas, "Arrow")


def _arrow_rows(fs: pafs.FileSystem, files: list[InputFile]) -> Iterator[Row]:
    """(source, 1-based row number within the shard, record) for every row of every shard."""
    for file in files:
        row = 0
        try:
            with fs.open_input_stream(file.path) as stream:
                for batch in pa.ipc.open_stream(stream):
                    for record in batch.to_pylist():
                        row += 1
                        yield file.source, row, record
        except (OSError, pa.ArrowException) as e:
            raise DeliftError(
                f"data: cannot read Arrow file {file.source}: {first_line(e)}"
            ) from None
