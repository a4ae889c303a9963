"""storage: joining and resolving local paths and URIs whose query string holds options."""

from __future__ import annotations

from pathlib import Path

import pyarrow.fs as pafs
import pytest

from delift_ray import storage
from delift_ray.commit import committed_dir, staged
from delift_ray.errors import ConfigError

Q = "?endpoint_override=127.0.0.1:9000&scheme=http"


def test_join_keeps_the_query_string_after_the_path():
    assert storage.join(f"s3://bkt/run{Q}", "store") == f"s3://bkt/run/store{Q}"
    assert storage.join(f"s3://bkt/run/{Q}", "a/", "/b.parquet") == f"s3://bkt/run/a/b.parquet{Q}"
    assert storage.join("s3://bkt", "x") == "s3://bkt/x"
    assert storage.join("runs/demo", "store") == "runs/demo/store"
    assert storage.join(f"s3://bkt/run{Q}") == f"s3://bkt/run{Q}"


def test_name_parent_and_display_ignore_the_query_string():
    uri = f"s3://bkt/runs/run-0002{Q}"
    assert storage.name(uri) == "run-0002"
    assert storage.parent(uri) == f"s3://bkt/runs{Q}"
    assert storage.display(uri) == "s3://bkt/runs/run-0002"
    assert storage.name("/a/b/subset.jsonl") == "subset.jsonl"
    assert storage.display("/a/b?c") == "/a/b?c"  # a local name may hold a '?'


def test_resolve_reads_the_options_from_the_query_string():
    fs, path = storage.resolve(f"s3://bkt/run/store{Q}")
    assert isinstance(fs, pafs.S3FileSystem) and path == "bkt/run/store"
    fs, path = storage.resolve("rel/dir")
    assert isinstance(fs, pafs.LocalFileSystem) and path == str(Path("rel/dir").absolute())


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("nope://bkt/x", "Unrecognized filesystem type"),
        (f"s3:///x{Q}", "Missing bucket name"),
        ("s3://bkt/x?endpoint=127.0.0.1", "Unexpected query parameter"),
    ],
)
def test_a_uri_no_filesystem_takes_is_a_one_line_config_error(uri, reason):
    with pytest.raises(ConfigError, match=f"^config: output_dir .* is not usable: {reason}") as e:
        storage.resolve(uri, "output_dir")
    assert "\n" not in str(e.value)
    assert "127.0.0.1" not in str(e.value).split(" is not usable")[0]  # the query is not shown


def test_local_staging_renames_all_files_or_none(tmp_path):
    out = str(tmp_path / "out")
    with staged(out) as stage:
        for name in ("a.txt", "b.txt"):
            storage.write_bytes(stage.target(name), name.encode())
        assert sorted(p.name for p in Path(out).iterdir() if not p.name.startswith(".")) == []
    assert Path(out, "b.txt").read_bytes() == b"b.txt" and committed_dir(out) == out
    with pytest.raises(OSError), staged(out) as stage:
        storage.write_bytes(stage.target("a.txt"), b"new")
        raise OSError("disk full")
    assert sorted(p.name for p in Path(out).iterdir()) == ["a.txt", "b.txt"]
    assert Path(out, "a.txt").read_bytes() == b"a.txt"
