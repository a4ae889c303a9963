"""Paths and object-store URIs, one way for every path a config names.

A path is a local path or any URI pyarrow's filesystems read (``file://``, ``s3://``, ``gs://``,
``hdfs://``, ...), options in its query string (``s3://bucket/run?endpoint_override=host:9000&
scheme=http``). Credentials come from where pyarrow's filesystems look for them (for S3: the
AWS_* environment variables, ~/.aws, an instance role), never from a file in the project.
Joining keeps the query string; messages show a URI without it (it may hold options users would
not print).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from delift_ray.errors import ConfigError, first_line


def is_uri(path: str) -> bool:
    """Whether `path` is a URI (scheme://...) rather than a local path."""
    return "://" in path


def split_query(uri: str) -> tuple[str, str]:
    """(the URI without its query string, the query string with its '?', or '')."""
    if not is_uri(uri) or "?" not in uri:
        return uri, ""
    base, query = uri.split("?", 1)
    return base, "?" + query


def join(base: str, *parts: str) -> str:
    """`base`/part/...: a local path joined as the OS does, a URI with its query string kept."""
    if not is_uri(base):
        return os.path.join(base, *parts)
    root, query = split_query(base)
    tail = "/".join(p.strip("/") for p in parts if p.strip("/"))
    return f"{root.rstrip('/')}/{tail}{query}" if tail else base


def parent(path: str) -> str:
    """The directory `path` is in (a URI keeps its query string)."""
    if not is_uri(path):
        return os.path.dirname(os.path.abspath(os.path.expanduser(path)))
    root, query = split_query(path)
    return root.rstrip("/").rsplit("/", 1)[0] + query


def name(path: str) -> str:
    """The last component of `path` (without a URI's query string)."""
    root, _ = split_query(path)
    return (
        root.rstrip("/").rsplit("/", 1)[-1] if is_uri(root) else os.path.basename(root.rstrip("/"))
    )


def display(path: str) -> str:
    """`path` as messages show it: a URI without its query string."""
    return split_query(path)[0]


def resolve(path: str, what: str = "path") -> tuple[pafs.FileSystem, str]:
    """The filesystem of `path` and its path there; ConfigError (`what: ...`) for a URI that
    names no filesystem (unknown scheme, missing bucket, bad option)."""
    if not is_uri(path):
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(path))
    try:
        fs, inner = pafs.FileSystem.from_uri(path)
    except (pa.ArrowException, ValueError, OSError) as e:
        raise ConfigError(
            f"config: {what} {display(path)!r} is not usable: {first_line(e)}"
        ) from None
    return fs, inner


def check(path: str, what: str) -> None:
    """ConfigError now if `path` is a URI no filesystem takes (nothing is read)."""
    if is_uri(path):
        resolve(path, what)


def info(path: str) -> pafs.FileInfo:
    """What is at `path` (type NotFound if nothing); OSError if the store cannot be reached."""
    fs, inner = resolve(path)
    return fs.get_file_info(inner)


def is_file(path: str) -> bool:
    """Whether a file is at `path`."""
    return info(path).type == pafs.FileType.File


def names(path: str) -> list[str]:
    """The names of the entries of directory `path`, sorted ([] if it does not exist)."""
    fs, inner = resolve(path)
    found = fs.get_file_info(pafs.FileSelector(inner, allow_not_found=True))
    return sorted(f.base_name for f in found)


def read_bytes(path: str) -> bytes:
    """The bytes of the file at `path`."""
    fs, inner = resolve(path)
    with fs.open_input_stream(inner) as f:
        data: bytes = f.read()
    return data


def read_text(path: str) -> str:
    """The UTF-8 text of the file at `path`."""
    return read_bytes(path).decode("utf-8")


@contextmanager
def open_output(path: str) -> Iterator[Any]:
    """A stream writing the file at `path` (its directory made first). On an object store the
    object appears whole when the stream closes without error, or not at all."""
    fs, inner = resolve(path)
    fs.create_dir(inner.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(inner) as out:
        yield out


def write_bytes(path: str, data: bytes) -> None:
    """Write `data` at `path` in one piece (not atomic on local disk: see files.py for that)."""
    with open_output(path) as out:
        out.write(data)


def read_table(path: str) -> pa.Table:
    """The Parquet file at `path` as a table."""
    fs, inner = resolve(path)
    return pq.read_table(inner, filesystem=fs)


def write_table(table: pa.Table, path: str) -> None:
    """Write `table` as a Parquet file at `path` in one piece."""
    with open_output(path) as out:
        pq.write_table(table, out)


def delete(path: str) -> None:
    """Remove the file or directory tree at `path`, if there is one."""
    fs, inner = resolve(path)
    kind = fs.get_file_info(inner).type
    if kind == pafs.FileType.Directory:
        fs.delete_dir(inner)
    elif kind == pafs.FileType.File:
        fs.delete_file(inner)


def copy_tree(local_dir: str, dest: str) -> None:
    """Copy the local directory `local_dir` to `dest` (any path or URI)."""
    fs, inner = resolve(dest)
    fs.create_dir(inner, recursive=True)
    pafs.copy_files(
        local_dir, inner, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs
    )
