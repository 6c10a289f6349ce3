"""Aborting a dead run's incomplete S3 multipart uploads under its staging prefix.

pyarrow cannot list multipart uploads, so this uses boto3 when it is installed (the ``s3``
extra); without it, incomplete uploads stay (invisible to readers, but billed) until the
bucket's lifecycle rule ``AbortIncompleteMultipartUpload`` removes them (docs/cloud.md).
"""

from __future__ import annotations

import contextlib
import logging
import os

from batchrank.fs import ObjectPath, current_options

__all__ = ["abort_uploads"]

log = logging.getLogger("batchrank.storage")


def abort_uploads(prefix: ObjectPath) -> int:
    """Abort every incomplete multipart upload under ``prefix`` (S3 only; best effort).

    Returns:
        How many were aborted.
    """
    if prefix.scheme != "s3":
        return 0
    try:
        import boto3
    except ImportError:
        return 0
    opts = current_options()
    endpoint = (
        opts.endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    )
    aborted = 0
    with contextlib.suppress(Exception):  # cleanup must never fail a run
        client = boto3.client(
            "s3",
            endpoint_url=endpoint or None,
            region_name=opts.region
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or "us-east-1",
        )
        key = prefix.key.rstrip("/") + "/"
        pages = client.get_paginator("list_multipart_uploads").paginate(
            Bucket=prefix.authority, Prefix=key
        )
        for page in pages:
            for up in page.get("Uploads", []):
                client.abort_multipart_upload(
                    Bucket=prefix.authority, Key=up["Key"], UploadId=up["UploadId"]
                )
                aborted += 1
    if aborted:
        log.info(
            "aborted %d incomplete uploads of a dead run under %s",
            aborted,
            prefix.display(),
            extra={"event": "uploads_aborted"},
        )
    return aborted
