"""A model directory on an object store (model.path or eval.model_path a URI, as train exports
it) copied once into the local cache, where transformers can load it.

The copy is keyed by where the committed files are and their sizes and times, so a new export
(a new commit) is fetched again and an unchanged one never is; it is written beside its final
name and renamed into place, so a killed fetch leaves nothing a later run would trust.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import pyarrow.fs as pafs

from delift_ray import storage
from delift_ray.commit import committed_dir
from delift_ray.errors import DeliftError, first_line


def cache_root() -> Path:
    """Where fetched models go: $XDG_CACHE_HOME/delift-ray/models (default ~/.cache/...)."""
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "delift-ray" / "models"


def local_copy(uri: str) -> str:
    """The local directory holding the model at `uri` (its committed export if it has one)."""
    source = committed_dir(uri) or uri
    fs, inner = storage.resolve(source, "model.path")
    try:
        found = fs.get_file_info(pafs.FileSelector(inner, recursive=True, allow_not_found=True))
    except OSError as e:
        raise DeliftError(f"model: cannot open {storage.display(uri)}: {first_line(e)}") from None
    files = sorted((f.path, f.size, f.mtime_ns) for f in found if f.type == pafs.FileType.File)
    if not files:
        raise DeliftError(f"model: model.path does not exist: {storage.display(uri)}")
    key = hashlib.sha256(repr((storage.display(source), files)).encode()).hexdigest()[:16]
    target = cache_root() / f"{storage.name(uri)}-{key}"
    if not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            pafs.copy_files(inner, scratch, source_filesystem=fs)
            os.replace(scratch, target)
        except OSError as e:
            shutil.rmtree(scratch, ignore_errors=True)
            if not target.is_dir():  # another process may have fetched it meanwhile
                shown = storage.display(uri)
                raise DeliftError(f"model: cannot fetch {shown}: {first_line(e)}") from None
    return str(target)
