"""Paths given as URIs: ``file://`` is a local path; ``s3://``, ``gs://``, ``hdfs://`` and
``abfs://`` are object-store paths (:class:`batchrank.fs.ObjectPath`); other schemes are refused.

Every path option goes through :func:`path_text` or :func:`as_path`, before any work, so a
malformed URI (no bucket, an unknown scheme) is one line naming the option.
``tfds:NAME`` (a tensorflow-datasets source for training) has no ``//`` and is no URI here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from batchrank.errors import ConfigError
from batchrank.fs import REMOTE_SCHEMES, ObjectPath, redact

__all__ = ["as_path", "path_text", "uri_scheme"]

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_COLLAPSED = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+):/")
"""A URI made into a ``Path``, which collapses ``//``: ``Path("s3://b/k")`` is ``s3:/b/k``."""


def uri_scheme(value: str | os.PathLike[str]) -> str | None:
    """The scheme of a URI (``s3`` for ``s3://bucket/key``), or None for a plain path."""
    if isinstance(value, ObjectPath):
        return value.scheme
    text = os.fspath(value)
    match = _SCHEME.match(text) or (None if isinstance(value, str) else _COLLAPSED.match(text))
    return match.group(1).lower() if match else None


def path_text(value: str | os.PathLike[str], what: str) -> str:
    """``value`` as path text: ``file://`` stripped, object-store URIs checked, others refused.

    Args:
        value: a path option's value.
        what: how the user named the option (``--out``, ``[score] out``), for the message.

    Returns:
        The local path text (``file:///tmp/top.csv`` gives ``/tmp/top.csv``) or the URI.

    Raises:
        ConfigError: an unknown scheme, a ``file://`` URI of a host, a URI without a bucket.
    """
    if isinstance(value, ObjectPath):
        return str(value)
    text = os.fspath(value)
    scheme = uri_scheme(value)
    if scheme is None:
        return text
    rest = text[len(scheme) + 1 :].removeprefix("//").removeprefix("/")
    if scheme == "file" and not isinstance(value, str):
        return "/" + rest
    if scheme in REMOTE_SCHEMES:
        after = text[len(scheme) + 3 :] if isinstance(value, str) else rest
        authority = after.split("/", 1)[0]
        if not authority or any(c.isspace() for c in authority):
            raise ConfigError(
                f"`{what} {redact(text)}`: malformed URI; expected {scheme}://BUCKET/KEY"
            )
        if ":" in authority.rpartition("@")[0]:
            raise ConfigError(
                f"`{what} {redact(text)}`: credentials in a URI are not accepted (they would "
                "show in process lists and logs); use the environment, a profile or a role"
            )
        return f"{scheme}://{rest}"
    rest = text[len(scheme) + 3 :]
    if scheme == "file":
        host, slash, path = rest.partition("/")
        if slash and host in ("", "localhost"):
            return "/" + path
        raise ConfigError(
            f"`{what} {text}`: a file:// URI must name a local path (file:///path); "
            f"received host {host!r}"
        )
    raise ConfigError(
        f"`{what} {redact(text)}`: unsupported URI scheme {scheme}://; expected a local path, "
        "file://, s3://, gs://, hdfs:// or abfs://"
    )


def as_path(value: str | os.PathLike[str], what: str) -> Path:
    """``value`` as a ``Path``: an :class:`~batchrank.fs.ObjectPath` for object-store URIs."""
    text = path_text(value, what)
    if uri_scheme(text) in REMOTE_SCHEMES:
        return ObjectPath(text)
    return Path(text)


def to_path(text: str | os.PathLike[str]) -> Path:
    """Checked path text as a ``Path`` (an ObjectPath for a URI), absolute."""
    if isinstance(text, ObjectPath):
        return text
    scheme = uri_scheme(text)
    if scheme in REMOTE_SCHEMES:
        rest = os.fspath(text)[len(scheme) + 1 :].lstrip("/")
        return ObjectPath(f"{scheme}://{rest}")
    return Path(text).resolve()
