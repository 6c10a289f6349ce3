"""Paths given as URIs: ``file://`` is a local path; object-store schemes are refused for now.

Until batchrank writes to and reads from object stores, a path such as ``s3://bucket/top.parquet``
would be taken as the local folder ``./s3:/bucket`` (outputs) or reported as missing (inputs).
Every path option goes through :func:`refuse_uri` so the user learns why, before any work.
``tfds:NAME`` (a tensorflow-datasets source for training) has no ``//`` and is no URI here.
"""

from __future__ import annotations

import os
import re

from batchrank.errors import ConfigError

__all__ = ["refuse_uri", "uri_scheme"]

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_COLLAPSED = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+):/")
"""A URI made into a ``Path``, which collapses ``//``: ``Path("s3://b/k")`` is ``s3:/b/k``."""


def uri_scheme(value: str | os.PathLike[str]) -> str | None:
    """The scheme of a URI (``s3`` for ``s3://bucket/key``), or None for a plain path."""
    text = os.fspath(value)
    match = _SCHEME.match(text) or (None if isinstance(value, str) else _COLLAPSED.match(text))
    return match.group(1).lower() if match else None


def refuse_uri(value: str | os.PathLike[str], what: str) -> str:
    """``value`` as a local path: ``file://`` stripped, any other scheme refused.

    Args:
        value: a path option's value.
        what: how the user named the option (``--out``, ``[score] out``), for the message.

    Returns:
        The local path text (``file:///tmp/top.csv`` gives ``/tmp/top.csv``).

    Raises:
        ConfigError: the value is a URI with another scheme, or a ``file://`` URI of a host.
    """
    text = os.fspath(value)
    scheme = uri_scheme(value)
    if scheme is None:
        return text
    rest = text[len(scheme) + 1 :].removeprefix("//").removeprefix("/")
    if scheme == "file" and not isinstance(value, str):
        return "/" + rest
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
        f"`{what} {text}`: object-store URIs ({scheme}://) are not supported yet; use a local path"
    )
