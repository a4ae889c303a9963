"""A real S3-compatible server for the object-store tests: moto_server on 127.0.0.1.

The server takes any credentials: conftest.py puts fake ones in the environment before any local
Ray starts, so Ray's workers find them the way users' workers would.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BUCKET = "delift-test"


class S3Server:
    """A running moto_server and its bucket: URIs for delift-ray, object keys for checks."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.endpoint = f"127.0.0.1:{port}"
        self.query = f"?endpoint_override={self.endpoint}&scheme=http"
        import boto3  # here, not at import: conftest imports this module for every test

        self.client = boto3.client(  # the helper's own client: the server takes any keys
            "s3",
            endpoint_url=f"http://{self.endpoint}",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )

    def uri(self, key: str, bucket: str = BUCKET) -> str:
        """The URI delift-ray takes for `key` in `bucket`, the endpoint in its query string."""
        return f"s3://{bucket}/{key.strip('/')}{self.query}"

    def fresh_uri(self, what: str = "run") -> str:
        """The URI of a prefix no test has used."""
        return self.uri(f"{what}-{uuid.uuid4().hex[:8]}")

    def keys(self, uri: str) -> list[str]:
        """The keys under the prefix of `uri` (relative to it), sorted."""
        prefix = uri.split("?", 1)[0].split("/", 3)[3].rstrip("/") + "/"
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return sorted(o["Key"][len(prefix) :] for page in pages for o in page.get("Contents", []))

    def get(self, uri: str) -> bytes:
        """The bytes of the object at `uri`."""
        key = uri.split("?", 1)[0].split("/", 3)[3]
        body: bytes = self.client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        return body


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@contextmanager
def moto_server(timeout_s: float = 60) -> Iterator[S3Server]:
    """Start moto_server on a free loopback port, wait until it answers, create the bucket;
    stop it at the end."""
    port = _free_port()
    exe = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start on port {port}") from None
                time.sleep(0.1)
        server = S3Server(port)
        server.client.create_bucket(Bucket=BUCKET)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
