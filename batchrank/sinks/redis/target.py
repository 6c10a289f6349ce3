"""A Redis target: ``redis://[user:password@]host:port/db`` (``rediss://`` for TLS) and its options.

One schema for the concept: :class:`RedisTarget` holds the URL and the publishing options
(``prefix``, ``keep``, ``value``, ``timeout``, ``retries``). ``batchrank score --publish URL``
gives them as the URL's query (``?prefix=top:&keep=3``), a job file as the keys of its
``[publish.redis]`` section; both go through :func:`target_of`.

The password never leaves this object in text: :attr:`RedisTarget.display` (used by every log
line, error and manifest) shows it as ``***``, and so does ``repr``.
"""

from __future__ import annotations

import math
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from batchrank.errors import ConfigError
from batchrank.fs import redact

__all__ = [
    "DEFAULT_PREFIX",
    "OPTION_KEYS",
    "RedisTarget",
    "ValueFormat",
    "target_of",
]

ValueFormat = Literal["json", "compact"]
DEFAULT_PREFIX = "batchrank:{job}:"
"""The key prefix; ``{job}`` is the job's name (``batchrank score``: the output file's stem)."""

OPTION_KEYS = ("prefix", "keep", "value", "timeout", "retries")
"""The options a URL's query or a ``[publish.redis]`` section may give besides ``url``."""


@dataclass(frozen=True, kw_only=True)
class RedisTarget:
    """Where and how to publish: a parsed Redis URL and the publishing options."""

    scheme: Literal["redis", "rediss"]
    host: str
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    prefix: str = DEFAULT_PREFIX
    """Key prefix; may hold ``{job}``."""
    keep: int = 2
    """Committed generations kept (the current one included) for rollback."""
    value: ValueFormat = "json"
    """``json``: the nested layout's objects; ``compact``: the movie ids only."""
    timeout: float = 10.0
    """Seconds a connect or a reply may take."""
    retries: int = 3
    """Reconnects after a connection error, with bounded exponential backoff."""

    @property
    def tls(self) -> bool:
        """Whether the connection uses TLS (``rediss://``)."""
        return self.scheme == "rediss"

    @property
    def display(self) -> str:
        """The URL as messages, logs and manifests show it: the password as ``***``."""
        auth = ""
        if self.username or self.password:
            auth = (self.username or "") + (":***" if self.password else "") + "@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{auth}{host}:{self.port}/{self.db}"

    def key_prefix(self, job: str) -> str:
        """The prefix with ``{job}`` filled in."""
        return self.prefix.replace("{job}", job)

    def to_manifest(self, job: str) -> dict[str, Any]:
        """What the manifest records about the target (never the password)."""
        return {
            "url": self.display,
            "prefix": self.key_prefix(job),
            "keep": self.keep,
            "value": self.value,
        }


def _bad(where: str, key: str, value: Any, expected: str) -> ConfigError:
    shown = redact(value) if isinstance(value, str) else repr(value)
    return ConfigError(f"{where} {key}: expected {expected}; received {shown!r}")


def _int(where: str, key: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _bad(where, key, value, f"an integer in [{low}, {high}]")
    return value


def _float(where: str, key: str, value: Any, low: float, high: float) -> float:
    try:
        x = float(value) if isinstance(value, str | int | float) else math.nan
    except ValueError:
        x = math.nan
    if isinstance(value, bool) or not (low < x <= high):
        raise _bad(where, key, value, f"a number of seconds in ({low:g}, {high:g}]")
    return x


def _options(where: str, options: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key not in OPTION_KEYS:
            raise ConfigError(f"{where}: unknown option {key!r}; expected {', '.join(OPTION_KEYS)}")
        if key == "prefix":
            if not isinstance(value, str) or not value or any(c in value for c in "\r\n"):
                raise _bad(where, key, value, "a non-empty key prefix on one line")
            out[key] = value
        elif key == "keep":
            out[key] = _int(where, key, value, 1, 1000)
        elif key == "retries":
            out[key] = _int(where, key, value, 0, 100)
        elif key == "timeout":
            out[key] = _float(where, key, value, 0, 3600)
        elif value not in get_args(ValueFormat):
            raise _bad(where, key, value, "json or compact")
        else:
            out[key] = value
    return out


def target_of(
    url: str,
    options: Mapping[str, Any] | None = None,
    where: str = "--publish",
    url_key: str = "",
) -> RedisTarget:
    """Parse a Redis URL (its query may give options) plus explicit ``options``.

    Args:
        url: ``redis://[user:password@]host[:port][/db][?prefix=..&keep=..]``, or ``rediss://``.
        options: ``[publish.redis]`` keys other than ``url`` (they win over the query's).
        where: how the user named the URL (``--publish``), or the section of the URL and the
            options (``jobs/x.toml: [publish.redis]``, with ``url_key`` ``url``).
        url_key: the URL's key in ``where``, for messages about the URL.

    Raises:
        ConfigError: naming ``where`` and the (redacted) URL.
    """
    options_where = where
    where = f"{where} {url_key}" if url_key else where
    shown = redact(url) if isinstance(url, str) else repr(url)
    if not isinstance(url, str):
        raise ConfigError(f"{where}: expected a redis:// URL; received {shown}")
    try:
        parts = urllib.parse.urlsplit(url.strip())
        port = parts.port
    except ValueError as e:
        raise ConfigError(f"{where} {shown}: not a valid URL ({redact(str(e))})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss"):
        raise ConfigError(
            f"{where} {shown}: expected a redis:// or rediss:// URL "
            "(redis://[user:password@]host:port/db)"
        )
    if not parts.hostname:
        raise ConfigError(f"{where} {shown}: the URL names no host")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ConfigError(
            f"{where} {shown}: the database must be a number (/0 to /15); received {path!r}"
        )
    if parts.fragment:
        raise ConfigError(f"{where} {shown}: a Redis URL has no #fragment")
    query: dict[str, Any] = {}
    for key, value in urllib.parse.parse_qsl(
        parts.query, keep_blank_values=True, strict_parsing=False
    ):
        if key in query:
            raise ConfigError(f"{where} {shown}: option {key!r} given twice")
        query[key] = value
    merged = {**_options(f"{where} {shown}", query), **_options(options_where, options or {})}
    unquote = urllib.parse.unquote
    return RedisTarget(
        scheme=scheme,  # type: ignore[arg-type]  # checked above
        host=parts.hostname,
        port=port or 6379,
        db=int(path) if path else 0,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        **merged,
    )
