"""A real S3 API on 127.0.0.1: moto's standalone server, started on a free port.

:class:`MotoS3` is what the ``s3`` fixture in ``tests/conftest.py`` runs for the session; a test
that stops the server mid-run starts its own with ``with MotoS3() as server:``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-value",
    "AWS_REGION": "us-east-1",
}
"""Dummy credentials: moto accepts any; the secret is checked never to appear in output."""


class MotoS3:
    """``moto.server.ThreadedMotoServer`` on 127.0.0.1, port chosen by the OS."""

    def __init__(self) -> None:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.endpoint = ""

    def __enter__(self) -> MotoS3:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        if self.endpoint:
            self._server.stop()
            self.endpoint = ""

    @property
    def env(self) -> dict[str, str]:
        """The variables a client needs: the endpoint and the dummy credentials."""
        return {"AWS_ENDPOINT_URL": self.endpoint, **CREDENTIALS}

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=CREDENTIALS["AWS_REGION"],
        )

    def bucket(self) -> str:
        """A new empty bucket's name."""
        name = f"b-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def upload(self, local: Path, uri: str) -> None:
        """Copy a local file or folder (recursively) to ``s3://bucket/key``."""
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        client = self.client()
        files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
        for f in files:
            rel = f.name if f == local else f.relative_to(local).as_posix()
            dest = key if f == local else f"{key.rstrip('/')}/{rel}"
            client.put_object(Bucket=bucket, Key=dest, Body=f.read_bytes())

    def get(self, uri: str) -> bytes:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        body: bytes = self.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        return body

    def keys(self, uri: str) -> list[str]:
        """Every object key under ``s3://bucket/prefix``, sorted; not the zero-byte folder
        markers (``folder/``) Arrow writes, which readers take as folders."""
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        pages = (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        )
        keys = (o["Key"] for page in pages for o in page.get("Contents", []))
        return sorted(k for k in keys if not k.endswith("/"))


def use_env(env: dict[str, str]) -> Iterator[None]:
    """Set ``env`` in ``os.environ`` (restored after) and drop cached file systems."""
    from batchrank import fs

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    fs.clear_cache()
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        fs.clear_cache()
