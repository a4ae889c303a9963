"""All-or-nothing outputs: a run's files appear together or not at all.

On local disk each file is written under a temporary name beside its target and the set is
renamed into place once every write succeeded (today's layout: the files sit in output_dir).
An object store has no rename, so there each attempt writes under a prefix of its own,
``<output_dir>/runs/<UTC time>-<id>/``, and then a small pointer, ``<output_dir>/latest.json``, is
written last (one PUT: whole or absent). Readers go through `committed_dir`, which trusts only
the pointer, so a killed or failed attempt leaves nothing a reader would take; the next commit
removes every attempt but itself and the one it replaced.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from delift_ray import storage
from delift_ray.errors import DeliftError
from delift_ray.files import fsync_dir, fsync_file

POINTER = "latest.json"  # on object stores; a `latest` symlink on local disk
LATEST_LINK = "latest"
ATTEMPTS = "runs"


class Staging:
    """The files of one attempt at writing output_dir, visible only once committed."""

    def __init__(self, output_dir: str) -> None:
        self.output_dir = output_dir
        self.local = not storage.is_uri(output_dir)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self.attempt = f"{ATTEMPTS}/{stamp}-{uuid.uuid4().hex[:8]}"
        self.directory = output_dir if self.local else storage.join(output_dir, self.attempt)
        self._temps: dict[str, str] = {}

    def location(self, name: str) -> str:
        """Where file `name` is once the attempt is committed."""
        return storage.join(self.directory, name)

    def target(self, name: str) -> str:
        """Where to write file `name` of this attempt now (a temp name on local disk)."""
        if not self.local:
            return self.location(name)
        tmp = self._temps[name] = storage.join(
            self.output_dir, f".{name}.{uuid.uuid4().hex[:12]}.tmp"
        )
        return tmp

    def commit(self) -> None:
        """Make every file visible: rename them into place, or write the pointer last."""
        if not self.local:
            previous = pointed(self.output_dir)
            point(self.output_dir, self.attempt)
            self._prune(keep={self.attempt, previous})
            return
        for name, tmp in self._temps.items():
            fsync_file(tmp)
            os.replace(tmp, self.location(name))
        fsync_dir(self.output_dir)

    def _prune(self, keep: set[str | None]) -> None:
        """Remove the attempts that are neither the new one nor the one it replaces (a reader
        may still be reading that one): failed, killed and older ones (best effort)."""
        attempts = storage.join(self.output_dir, ATTEMPTS)
        for name in storage.names(attempts):
            if f"{ATTEMPTS}/{name}" not in keep:
                with contextlib.suppress(OSError):
                    storage.delete(storage.join(attempts, name))

    def abandon(self) -> None:
        """Remove what this attempt wrote (best effort: readers ignore it anyway)."""
        paths = list(self._temps.values()) if self.local else [self.directory]
        for path in paths:
            with contextlib.suppress(OSError):
                storage.delete(path)


@contextmanager
def staged(output_dir: str) -> Iterator[Staging]:
    """An attempt at writing output_dir: committed if the block ends normally, else abandoned."""
    stage = Staging(output_dir)
    try:
        yield stage
        stage.commit()
    except BaseException:
        stage.abandon()
        raise


def committed_dir(output_dir: str) -> str | None:
    """Where output_dir's committed files are (None if nothing was committed there): output_dir
    itself on local disk, the attempt the pointer names on an object store."""
    if not storage.is_uri(output_dir):
        return output_dir if os.path.isdir(output_dir) else None
    attempt = pointed(output_dir)
    return None if attempt is None else storage.join(output_dir, attempt)


def readable_dir(directory: str, what: str) -> str:
    """Where to read `directory` from: its committed files if a run wrote it, else the directory
    itself (one a user filled); DeliftError (`what: ...`) if runs wrote there but none
    committed."""
    done = committed_dir(directory)
    if done is not None:
        return done
    if storage.is_uri(directory) and ATTEMPTS in storage.names(directory):
        shown = storage.display(directory)
        raise DeliftError(
            f"{what}: {shown} holds no committed run (no {POINTER}): the runs that wrote there "
            "failed or were killed; run again"
        )
    return directory


def point(directory: str, entry: str) -> None:
    """Point `directory`'s latest at its entry `entry`, atomically: a symlink renamed over the
    old one on local disk, the pointer object written in one PUT on an object store."""
    if storage.is_uri(directory):
        record = {"run": entry, "committed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        storage.write_bytes(storage.join(directory, POINTER), json.dumps(record).encode())
        return
    tmp = os.path.join(directory, f".{LATEST_LINK}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(entry, tmp)
    os.replace(tmp, os.path.join(directory, LATEST_LINK))


def pointed(directory: str) -> str | None:
    """The entry `directory`'s latest points at, or None if it points at nothing yet."""
    if not storage.is_uri(directory):
        link = os.path.join(directory, LATEST_LINK)
        return os.readlink(link) if os.path.islink(link) else None
    try:
        record = json.loads(storage.read_text(storage.join(directory, POINTER)))
    except FileNotFoundError:
        return None
    return str(record["run"])
