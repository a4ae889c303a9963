"""Helpers the data tests share: rows, JSONL lines, and reading with a DataConfig."""

from __future__ import annotations

import json
from pathlib import Path

from delift_ray.config import DataConfig
from delift_ray.data.examples import ExampleSet
from delift_ray.data.read import read_examples

DEMO = Path(__file__).resolve().parents[2] / "pipelines" / "data"


def good(i: int, **extra: object) -> dict:
    """A valid alpaca row number i."""
    return {"instruction": f"Reverse word {i}.", "input": f"w{i}", "output": f"{i}w", **extra}


def write_lines(path: Path, lines: list[bytes]) -> Path:
    """Write byte lines, newline-terminated."""
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def jline(obj: object) -> bytes:
    """One JSONL line."""
    return json.dumps(obj).encode()


def read(path: Path | str, **kw: object) -> ExampleSet:
    """read_examples with DataConfig(path, **kw)."""
    return read_examples(DataConfig(path=str(path), **kw))  # type: ignore[arg-type]
