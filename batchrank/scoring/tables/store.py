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


def _s3_settings(location: str) -> tuple[str | None, str | None, bool] | None:
    """``(endpoint, region, anonymous)`` for an S3 location; None for any other."""
    if not location.lower().startswith(("s3://", "s3a://")):
        return None
    endpoint = _endpoint()
    return endpoint, _region(endpoint), current_options().anonymous


def delta_storage_options(location: str) -> dict[str, str]:
    """delta-rs ``storage_options`` for a table (empty for a local one): endpoint, region,
    plain HTTP for an ``http://`` endpoint, unsigned requests for ``[storage] anonymous``."""
    settings = _s3_settings(location)
    if settings is None:
        return {}
    endpoint, region, anonymous = settings
    opts = {"AWS_ENDPOINT_URL": endpoint, "AWS_REGION": region}
    if endpoint and endpoint.lower().startswith("http://"):
        opts["AWS_ALLOW_HTTP"] = "true"
    if anonymous:
        opts["AWS_SKIP_SIGNATURE"] = "true"
    return {k: v for k, v in opts.items() if v}


def iceberg_io_properties(location: str) -> dict[str, str]:
    """pyiceberg catalog properties for its ``PyArrowFileIO`` on S3 (empty for a local table)."""
    settings = _s3_settings(location)
    if settings is None:
        return {}
    endpoint, region, anonymous = settings
    props = {
        "py-io-impl": "pyiceberg.io.pyarrow.PyArrowFileIO",
        "s3.endpoint": endpoint,
        "s3.region": region,
        "s3.anonymous": "true" if anonymous else None,
    }
    return {k: v for k, v in props.items() if v}
