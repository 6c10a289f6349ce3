"""Logging setup for the command line: human lines or one JSON object per line.

batchrank's modules log through standard :mod:`logging` loggers under ``batchrank`` (the scorer
uses ``batchrank.score``) and attach structured fields with ``extra``::

    log.info("wrote %d users", n, extra={"event": "score_done", "run_id": rid, "counts": {...}})

:func:`setup_logging` installs one handler on the root logger, so the lines of libraries (JAX,
Keras, Python warnings) take the same form; in JSON mode stderr then holds nothing but JSON
objects, one per line, for log collectors. :func:`set_context` adds fields (the job's name, the
run id) to every later record that does not carry its own.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from collections.abc import Mapping
from typing import IO, Any, Literal

from batchrank.fs import redact
from batchrank.text import printable

__all__ = [
    "HumanFormatter",
    "JsonFormatter",
    "LogFormat",
    "clear_context",
    "set_context",
    "setup_logging",
    "teardown_logging",
]

LogFormat = Literal["human", "json"]

STRUCTURED_FIELDS = ("event", "run_id", "job", "counts")
"""Fields that records may carry through ``extra`` and that JSON lines always hold."""

_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}
_context: dict[str, Any] = {}
_HANDLER_MARK = "_batchrank_handler"


def set_context(**fields: Any) -> None:
    """Add fields (for instance ``job`` and ``run_id``) to every later record lacking them."""
    _context.update({k: v for k, v in fields.items() if v is not None})


def clear_context() -> None:
    """Forget the fields given to :func:`set_context`."""
    _context.clear()


class _ContextFilter(logging.Filter):
    """Copy the context fields onto records that lack them."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.items():
            if getattr(record, key, None) is None:
                setattr(record, key, value)
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    """Fields a caller attached through ``extra``, beyond the standard ones."""
    return {
        k: v
        for k, v in vars(record).items()
        if k not in _RESERVED and k not in STRUCTURED_FIELDS and not k.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per record: timestamp, level, logger, message, run_id, job, event, counts.

    Other ``extra`` fields are kept too; values JSON cannot hold are written as strings.
    """

    def format(self, record: logging.LogRecord) -> str:
        stamp = dt.datetime.fromtimestamp(record.created, dt.UTC)
        obj: dict[str, Any] = {
            "timestamp": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key in STRUCTURED_FIELDS:
            obj[key] = getattr(record, key, None)
        obj.update(_extras(record))
        if record.exc_info:
            obj["exception"] = self.formatException(record.exc_info)
        return json.dumps(obj, default=str, ensure_ascii=False)


class HumanFormatter(logging.Formatter):
    """``2025-01-31 02:00:04 INFO  message`` with a traceback when one is attached.

    Control characters in the message (a title or a file name can carry terminal escapes) are
    shown escaped, see :func:`batchrank.text.printable`; a record stays one line.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-5s %(message)s", "%Y-%m-%d %H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        # Not the traceback another handler cached unescaped on the record: format our own.
        cached, record.exc_text = record.exc_text, None
        try:
            return super().format(record)
        finally:
            record.exc_text = cached

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(redact(super().formatMessage(record)))

    def formatException(self, ei: Any) -> str:
        return printable(super().formatException(ei), keep_newlines=True)


def setup_logging(
    fmt: LogFormat = "human",
    *,
    level: int | str = logging.INFO,
    stream: IO[str] | None = None,
    context: Mapping[str, Any] | None = None,
) -> logging.Handler:
    """Send log records to ``stream`` (default: the current stderr) in the given format.

    batchrank's loggers log at ``level``; other libraries' loggers at WARNING and above. Python
    warnings are logged too. Calling it again replaces the handler installed before.

    Args:
        fmt: ``human`` lines or ``json`` objects, one per line.
        level: level of batchrank's loggers.
        stream: where lines go (default: ``sys.stderr`` at the time of the call).
        context: initial context fields (see :func:`set_context`).

    Returns:
        The installed handler.
    """
    if fmt not in ("human", "json"):
        raise ValueError(f"log format must be human or json; received {fmt!r}")
    teardown_logging()
    root = logging.getLogger()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    setattr(handler, _HANDLER_MARK, True)
    handler.setFormatter(JsonFormatter() if fmt == "json" else HumanFormatter())
    handler.addFilter(_ContextFilter())
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("batchrank").setLevel(level)
    logging.captureWarnings(True)
    if context:
        set_context(**context)
    return handler


def teardown_logging() -> None:
    """Remove the handler :func:`setup_logging` installed and forget the context."""
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, _HANDLER_MARK, False):
            root.removeHandler(old)
    clear_context()
