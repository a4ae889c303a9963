"""Writing files: atomically (beside the target, fsync, os.replace; never half-written; on an
object store one PUT, whole or absent), and checking a directory is writable before any work."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from delift_ray import storage
from delift_ray.errors import DeliftError, first_line


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success fsync and replace `path`, on error remove it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_bytes(data: bytes, path: str | Path) -> str:
    """Write bytes atomically (a path or a URI); returns the path."""
    if storage.is_uri(str(path)):
        storage.write_bytes(str(path), data)
    else:
        atomic_write_bytes(path, data)
    return str(path)


def write_text(text: str, path: str | Path) -> str:
    """Write UTF-8 text atomically (a path or a URI); returns the path."""
    return write_bytes(text.encode("utf-8"), path)


def write_json(obj: Any, path: str | Path) -> str:
    """Write JSON atomically (UTF-8, indented; a path or a URI); returns the path."""
    return write_text(json.dumps(obj, indent=2, default=str) + "\n", path)


def write_parquet(table: pa.Table, path: str | Path) -> str:
    """Write a Parquet file atomically (a path or a URI); returns the path."""
    if storage.is_uri(str(path)):
        storage.write_table(table, str(path))
    else:
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
    return str(path)


def writable_dir(path: str | Path, what: str) -> str:
    """Create `path` (a path or a URI) and write a file there; one-line DeliftError
    (`what: ...`) if either fails."""
    path = str(path)
    try:
        if storage.is_uri(path):
            fs, inner = storage.resolve(path, what)
            fs.create_dir(inner, recursive=True)
            probe = f"{inner.rstrip('/')}/.write-check-{uuid.uuid4().hex[:8]}"
            with fs.open_output_stream(probe) as out:
                out.write(b"")
            fs.delete_file(probe)
        else:
            Path(path).mkdir(parents=True, exist_ok=True)
            with atomic_path(Path(path, ".write-check")) as tmp:
                tmp.write_bytes(b"")
            Path(path, ".write-check").unlink()
    except OSError as e:
        raise write_error(what, path, e) from None
    return path


def write_error(what: str, path: str | Path, e: OSError) -> DeliftError:
    """The one-line error for a failed write under `path` (a URI shown without its query)."""
    return DeliftError(
        f"{what}: cannot write to {storage.display(str(path))}: {e.strerror or first_line(e)}"
    )


def prepare_output_dir(output_dir: str | Path) -> str:
    """Create a command's output_dir and check it is writable, before any work is done."""
    return writable_dir(output_dir, "output")


def fsync_file(path: str | Path) -> None:
    """Flush a written file to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: str | Path) -> None:
    """Make the rename durable; some platforms cannot open a directory, which is fine."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    with contextlib.suppress(OSError):
        os.fsync(fd)
    os.close(fd)
