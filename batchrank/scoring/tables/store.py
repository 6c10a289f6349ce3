"""Where a table's files live: the local disk or an object store, reached with batchrank's own
storage settings (:mod:`batchrank.fs`: ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, the
region, a job's ``[storage]`` section), for pyarrow (the Delta data files, maintenance), delta-rs
(``storage_options``) and pyiceberg (its ``FileIO`` properties).

Credentials are never copied into these settings: each library takes them from the SDK's own
chain (``AWS_ACCESS_KEY_ID`` and the rest, profiles, instance roles), so no secret can reach a
log, a manifest or an error. Commits on S3 are conditional writes (``If-None-Match: *``):
delta-rs 1.x writes each log entry with ``PutMode::Create``, so of two writers of one version
exactly one wins and the other fails (docs/tables.md, "Object stores").
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from batchrank.fs import ObjectPath, current_options, filesystem_of

if TYPE_CHECKING:
    import pyarrow.fs as pafs

__all__ = ["delta_storage_options", "filesystem", "fs_path", "iceberg_io_properties", "path_of"]


def path_of(location: str) -> Path:
    """The table's location as a ``Path`` (an :class:`ObjectPath` for a URI)."""
    return ObjectPath(location) if "://" in location else Path(location)


def fs_path(uri: str) -> str:
    """A location or file URI as its file system names it (``bucket/key``; a local path)."""
    if uri.startswith("file://"):
        return uri.removeprefix("file://")
    if "://" in uri:
        return ObjectPath(uri).fs_path
    return uri


def filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow file system of a table's location and the location within it.

    Raises:
        OSError: the file system cannot be created.
    """
    import pyarrow.fs as pafs

    path = path_of(location)
    if isinstance(path, ObjectPath):
        return filesystem_of(path)
    return pafs.LocalFileSystem(), str(path)


def _endpoint() -> str | None:
    return (
        current_options().endpoint
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
        or None
    )


def _region(endpoint: str | None) -> str | None:
    options = current_options()
    region = options.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    return region or ("us-east-1" if endpoint else None)  # S3-compatible servers ignore it


def _is_s3(location: str) -> bool:
    return location.lower().startswith(("s3://", "s3a://"))


def delta_storage_options(location: str) -> dict[str, str]:
    """delta-rs ``storage_options`` for a table (empty for a local one): endpoint, region,
    plain HTTP for an ``http://`` endpoint, unsigned requests for ``[storage] anonymous``."""
    if not _is_s3(location):
        return {}
    endpoint = _endpoint()
    opts: dict[str, str] = {}
    if endpoint:
        opts["AWS_ENDPOINT_URL"] = endpoint
        if endpoint.lower().startswith("http://"):
            opts["AWS_ALLOW_HTTP"] = "true"
    region = _region(endpoint)
    if region:
        opts["AWS_REGION"] = region
    if current_options().anonymous:
        opts["AWS_SKIP_SIGNATURE"] = "true"
    return opts


def iceberg_io_properties(location: str) -> dict[str, str]:
    """pyiceberg catalog properties for its ``PyArrowFileIO`` on S3 (empty for a local table)."""
    if not _is_s3(location):
        return {}
    endpoint = _endpoint()
    props = {"py-io-impl": "pyiceberg.io.pyarrow.PyArrowFileIO"}
    if endpoint:
        props["s3.endpoint"] = endpoint
    region = _region(endpoint)
    if region:
        props["s3.region"] = region
    if current_options().anonymous:
        props["s3.anonymous"] = "true"
    return props
