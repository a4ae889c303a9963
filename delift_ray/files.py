"""Writing files: atomically (beside the target, fsync, os.replace; never half-written), and
checking a directory is writable before any work."""

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

from delift_ray.errors import DeliftError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success fsync and replace `path`, on error remove it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(text: str, path: str | Path) -> Path:
    """Write UTF-8 text atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(obj: Any, path: str | Path) -> Path:
    """Write JSON atomically (UTF-8, indented); returns the path."""
    return write_text(json.dumps(obj, indent=2, default=str) + "\n", path)


def write_parquet(table: pa.Table, path: str | Path) -> Path:
    """Write a Parquet file atomically; returns the path."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def writable_dir(path: str | Path, what: str) -> Path:
    """Create `path` and write a file there; one-line DeliftError (`what: ...`) if either fails."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with atomic_path(path / ".write-check") as tmp:
            tmp.write_bytes(b"")
        (path / ".write-check").unlink()
    except OSError as e:
        raise DeliftError(f"{what}: cannot write to {path}: {e.strerror or e}") from None
    return path


def prepare_output_dir(output_dir: str | Path) -> Path:
    """Create a command's output_dir and check it is writable, before any work is done."""
    return writable_dir(output_dir, "output")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable; some platforms cannot open a directory, which is fine."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    with contextlib.suppress(OSError):
        os.fsync(fd)
    os.close(fd)
