"""One redaction rule for every URI printed (batchrank.fs.redact): a password never shows; a
user name shows before ``:***@`` (redis-cli, libpq); an object store's access key pair and a
bare ``name@`` (a token, perhaps) are hidden whole; query strings are hidden."""

from __future__ import annotations

import pytest

from batchrank.fs import redact
from batchrank.sinks.redis import target_of


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("redis://alice:s3cret@h:6379/0", "redis://alice:***@h:6379/0"),
        ("redis://:s3cret@h:6379/0", "redis://:***@h:6379/0"),
        ("postgresql://bob:pa:ss@db/x", "postgresql://bob:***@db/x"),
        ("https://ghp_T0KEN@github.com/o/r", "https://***@github.com/o/r"),
        ("s3://AKIAEXAMPLE:wJalr-secret@bucket/k.parquet", "s3://***@bucket/k.parquet"),
        ("S3://AKIAEXAMPLE:wJalr-secret@bucket/k", "S3://***@bucket/k"),
        ("gs://AKIAEXAMPLE@bucket/k", "gs://***@bucket/k"),
        ("s3://b/k.parquet?X-Amz-Signature=ab12&X-Amz-Credential=AKIA", "s3://b/k.parquet?***"),
        ("redis://u:pw@h/0?prefix=p:", "redis://u:***@h/0?***"),
        ("failed: password=hunter2, retrying", "failed: password=***, retrying"),
        ("at 'x_s3://AKIA:wJalr@b/k'", "at 'x_s3://***@b/k'"),
        # not userinfo: an @ after the host, a plain path, an e-mail address
        ("s3://bucket/user@example.com/k", "s3://bucket/user@example.com/k"),
        ("/data/a@b.csv and ops@example.com", "/data/a@b.csv and ops@example.com"),
    ],
)
def test_the_rule(text: str, shown: str) -> None:
    assert redact(text) == shown
    assert redact(shown) == shown  # already redacted text stays as it is


def test_a_redis_targets_display_passes_through_unchanged() -> None:
    for url in ("redis://alice:pw@h:1/0", "redis://:pw@h:1/0", "rediss://h:1/2"):
        display = target_of(url).display
        assert "pw" not in display and redact(display) == display
