"""The rows of an input: JSONL or Parquet files, a directory of them, or any pyarrow filesystem
URI. Each row is a record, or the reason it is not one (invalid JSON or UTF-8, not an object)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from delift_ray.data.examples import type_name
from delift_ray.errors import DeliftError, first_line

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
PARQUET_SUFFIXES = (".parquet", ".pq")
_BOM = b"\xef\xbb\xbf"
_CHUNK = 1 << 20
_BATCH = 65536
Row = tuple[str, int, dict[str, Any] | str]  # (source, 1-based row, record or reject reason)


def input_rows(path: str) -> tuple[Iterator[Row], pa.Schema | None, str]:
    """Every row under `path`, the Parquet schema (None for JSONL) and the kind of the files."""
    fs, files, kind = _list_files(path)
    if kind == "parquet":
        return _parquet_rows(fs, files), _parquet_schema(fs, files), kind
    return _jsonl_rows(fs, files), None, kind


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
    kinds = {_kind(PurePosixPath(p).name) or "" for p in found}  # _listed: never ""
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


def _jsonl_rows(fs: pafs.FileSystem, files: list[tuple[str, str]]) -> Iterator[Row]:
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
        return f"not a JSON object (got {type_name(value)})"
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


def _parquet_rows(fs: pafs.FileSystem, files: list[tuple[str, str]]) -> Iterator[Row]:
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
