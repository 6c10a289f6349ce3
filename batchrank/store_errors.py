"""A one-line, secret-free reason for an object store's error (``bucket does not exist``).

pyarrow's file systems raise ``OSError`` with the SDK's whole message: the store's error code
buried among request ids, keys, buckets and endpoints. :func:`remote_reason` finds the code and
says what it means in a few words, or shows the message's first line redacted, so that every
error about an object-store path is one line with no secret in it.
"""

from __future__ import annotations

import re

from batchrank.fs import redact

__all__ = ["KNOWN_REASONS", "remote_reason"]

KNOWN_REASONS = frozenset(
    {"bucket does not exist", "access denied", "credentials refused",
     "cannot reach the storage server", "no such object"}
)  # fmt: skip
"""What :func:`remote_reason` says when it recognises the store's error."""


_USER_TEXT = re.compile(
    r"'[^']*'|\"[^\"]*\"|\b[a-z][a-z0-9+.-]*://\S+|\b[\w.-]+:\d{2,5}\b|\b\d{1,3}(?:\.\d{1,3}){3}\b"
)
"""Parts of a store's message that carry names, not meaning: quoted keys and buckets, URIs and
``host:port`` (a port such as 40315 must not read as HTTP 403)."""

_REASONS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (reason, re.compile(pattern))
    for reason, pattern in (
        ("cannot reach the storage server",
         r"\bcurlcode: (?:6|7|28|35|52|55|56)\b|\bnetwork_connection\b|couldn't connect|"
         r"could not connect|connection (?:refused|reset|aborted)|failed to connect|"
         r"\btimed out\b|\btimeout\b|could not resolve host|broken pipe"),
        ("bucket does not exist", r"\bno[_ ]?such[_ ]?bucket\b|\bbucket does not exist\b"),
        ("credentials refused",
         r"\binvalidaccesskeyid\b|\bsignaturedoesnotmatch\b|\binvalid_access_key_id\b|"
         r"\bexpiredtoken\b|\binvalid_?client_?token_?id\b"),
        ("access denied",
         r"\baccess[_ ]?denied\b|\bforbidden\b|\bhttp (?:status )?(?:code )?403\b|"
         r"\bresponse code 403\b|\b403 forbidden\b|\bpermission denied\b"),
        ("no such object", r"\bpath does not exist\b|\bno[_ ]?such[_ ]?key\b|\bnot found\b"),
    )
)  # fmt: skip


def remote_reason(e: BaseException) -> str:
    """A one-line, secret-free reason for a file-system error (``bucket does not exist``).

    The store's error code decides, not the names in its message: keys, buckets, URIs and
    ``host:port`` are removed before matching, and patterns match whole words, so a key named
    ``forbidden/`` or an endpoint on port 40315 cannot be mistaken for a refusal."""
    text = str(e)
    low = _USER_TEXT.sub(" ", text.lower())
    for reason, pattern in _REASONS:
        if pattern.search(low):
            return reason
    line = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    return redact(line)[:200]
