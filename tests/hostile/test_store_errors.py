"""The reason a store's error is given is decided by its error code, never by the names in it.

CI once ran the mid-run outage test with moto on port 40315: pyarrow's "Failed to connect to
127.0.0.1:40315" contained "403", and the outage was reported as "access denied". These tests use
real errors from pyarrow, against a closed port and against the moto server, with ports, keys and
buckets chosen to carry the words the classifier looks for.
"""

from __future__ import annotations

import socket
from typing import Any

import pyarrow.fs as pafs
import pytest

from batchrank.fs import ObjectPath, clear_cache, filesystem_of
from batchrank.store_errors import remote_reason


def _closed_port_with(digits: str) -> int:
    """A port on 127.0.0.1 that nothing listens on, whose number contains ``digits``."""
    for port in range(int(digits) * 100, int(digits) * 100 + 100):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port  # bound then closed: nothing listens there
    raise AssertionError(f"no free port in {digits}00-{digits}99")


def _error(call: Any) -> OSError:
    with pytest.raises(OSError) as info:
        call()
    return info.value


@pytest.mark.parametrize("digits", ["403", "404"])
def test_an_unreachable_endpoint_is_unreachable_whatever_its_port(digits: str) -> None:
    port = _closed_port_with(digits)
    fs = pafs.S3FileSystem(
        endpoint_override=f"127.0.0.1:{port}", scheme="http", region="us-east-1",
        access_key="k", secret_key="s",
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=1),
    )  # fmt: skip
    for call in (lambda: fs.get_file_info("forbidden/403-not-found"),
                 lambda: fs.open_input_stream("access-denied/timeout.parquet")):  # fmt: skip
        e = _error(call)
        assert str(port) in str(e)  # the message really carries the port
        assert remote_reason(e) == "cannot reach the storage server", e


@pytest.mark.parametrize(
    "key",
    ["forbidden/403/p.parquet", "access denied/timed out.parquet", "x/AccessDenied-403.csv"],
)
def test_a_missing_key_named_like_an_error_is_missing(
    s3: str, key: str, monkeypatch: pytest.MonkeyPatch, s3_server: Any
) -> None:
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    clear_cache()
    fs, path = filesystem_of(ObjectPath(f"{s3}/{key}"))
    e = _error(lambda: fs.open_input_stream(path))
    assert remote_reason(e) == "no such object", e


def test_a_missing_bucket_named_like_an_error_is_missing(
    monkeypatch: pytest.MonkeyPatch, s3_server: Any
) -> None:
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    clear_cache()
    fs, path = filesystem_of(ObjectPath("s3://forbidden-403-timeout/k.parquet"))
    e = _error(lambda: fs.open_input_stream(path))
    assert remote_reason(e) in {"bucket does not exist", "no such object"}, e


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("AWS Error ACCESS_DENIED during GetObject operation: Access Denied", "access denied"),
        ("AWS Error NO_SUCH_BUCKET during HeadBucket operation", "bucket does not exist"),
        ("AWS Error UNKNOWN (HTTP status 403) during HeadObject operation: No response body.",
         "access denied"),
        ("AWS Error INVALID_ACCESS_KEY_ID during PutObject operation", "credentials refused"),
        ("When reading 'k' in bucket 'b': AWS Error NETWORK_CONNECTION during GetObject",
         "cannot reach the storage server"),
        ("GCS: 403 Forbidden", "access denied"),
        ("When getting information for key 'a/403' in bucket 'forbidden': Path does not exist",
         "no such object"),
    ],
)  # fmt: skip
def test_store_codes_decide(message: str, reason: str) -> None:
    assert remote_reason(OSError(message)) == reason


def test_an_unknown_error_is_its_first_line_without_secrets() -> None:
    e = OSError("something odd at s3://AKIA:wJalr-secret@b/k?X-Amz-Signature=ab12\nmore")
    got = remote_reason(e)
    assert "wJalr" not in got and "ab12" not in got and "\n" not in got
