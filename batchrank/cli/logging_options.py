"""``--log-format human|json`` for every command: one decorator, :func:`log_format_option`.

In JSON mode every line on stderr is a JSON object, whoever writes it. Python logging (and
``warnings``) goes through :class:`batchrank.logs.JsonFormatter`; TensorFlow's C++ logging,
absl's pre-init notices, XLA and anything else native code writes to file descriptor 2 is
caught by a pipe that replaces fd 2 for the command's duration and wrapped, one line at a time,
as ``{"event": "stderr", "message": <the line>, ...}`` by a reader thread. A failure is logged
as one ``run_failed`` event carrying ``exit_code`` and ``error`` instead of a text line.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click

from batchrank.errors import BatchrankError, Interrupted

__all__ = ["current_format", "log_format_option", "logging_session"]

log = logging.getLogger("batchrank.cli")
F = TypeVar("F", bound=Callable[..., Any])

_format = "human"
# glog / absl prefixes: "I0000 00:00:...", "W1201 ...", "E ..." -> the line's level.
_GLOG = re.compile(r"^([IWEF])\d{4} ")
_GLOG_LEVELS = {"I": logging.INFO, "W": logging.WARNING, "E": logging.ERROR, "F": logging.CRITICAL}


def current_format() -> str:
    """The ``--log-format`` of the command running now (``human`` outside one)."""
    return _format


def _record(line: str) -> logging.LogRecord:
    """A ``stderr`` event for one line that something wrote to stderr."""
    match = _GLOG.match(line)
    level = _GLOG_LEVELS[match.group(1)] if match else logging.WARNING
    record = logging.LogRecord("stderr", level, "", 0, line, None, None)
    record.event = "stderr"
    return record


def _forward(read_fd: int, handler: logging.Handler) -> None:
    """Wrap each line arriving on ``read_fd`` as a JSON ``stderr`` event, until EOF."""
    with os.fdopen(read_fd, "rb") as pipe:
        for raw in pipe:
            line = raw.decode("utf-8", "backslashreplace").rstrip("\r\n")
            if line.strip():
                handler.handle(_record(line))


class _JsonLines(io.TextIOBase):
    """A ``sys.stderr`` stand-in that hands each complete line to the JSON handler."""

    def __init__(self, handler: logging.Handler, fd: int | None) -> None:
        self._handler = handler
        self._fd = fd
        self._partial = ""
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        if self._fd is None:
            raise io.UnsupportedOperation("fileno")
        return self._fd

    def write(self, s: str) -> int:
        with self._lock:
            *lines, self._partial = (self._partial + s).split("\n")
        for line in lines:
            if line.strip():
                self._handler.handle(_record(line.rstrip("\r")))
        return len(s)

    def close(self) -> None:
        with self._lock:
            rest, self._partial = self._partial, ""
        if rest.strip():
            self._handler.handle(_record(rest))
        super().close()


@contextlib.contextmanager
def _json_stderr(level: int) -> Iterator[logging.Handler]:
    """JSON logging on stderr, and every other write to stderr wrapped as a JSON event.

    When ``sys.stderr`` is the process's fd 2 (a real run, not a test capturing
    ``sys.stderr``), fd 2 itself is replaced by a pipe for the block, so lines that native code
    (TensorFlow, absl, XLA) writes are wrapped too.
    """
    from batchrank.logs import setup_logging

    original = sys.stderr
    try:
        on_fd2 = original.fileno() == 2
    except (AttributeError, OSError, ValueError):
        on_fd2 = False
    with contextlib.suppress(Exception):
        original.flush()
    if not on_fd2:
        handler = setup_logging("json", level=level, stream=original)
        sys.stderr = _JsonLines(handler, None)
        try:
            yield handler
        finally:
            sys.stderr.close()
            sys.stderr = original
        return
    saved = os.dup(2)
    real = os.fdopen(saved, "w", buffering=1, encoding="utf-8", errors="backslashreplace")
    handler = setup_logging("json", level=level, stream=real)
    read_fd, write_fd = os.pipe()
    reader = threading.Thread(
        target=_forward, args=(read_fd, handler), name="batchrank-stderr", daemon=True
    )
    reader.start()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    sys.stderr = _JsonLines(handler, 2)
    try:
        yield handler
    finally:
        sys.stderr.close()
        sys.stderr = original
        os.dup2(saved, 2)  # drops this process's last write end of the pipe
        # A child process that inherited fd 2 may hold the pipe open: do not wait for it.
        reader.join(timeout=2.0)
        real.flush()
        # the handler keeps `real` until teardown_logging; fd 2 is restored, so point it there
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(original)
        real.close()


@contextlib.contextmanager
def logging_session(fmt: str, *, quiet: bool = False) -> Iterator[logging.Handler]:
    """Set up logging for one command; in JSON mode, turn every stderr line into JSON."""
    from batchrank.logs import setup_logging, teardown_logging

    global _format
    level = logging.WARNING if quiet else logging.INFO
    try:
        if fmt != "json":
            yield setup_logging("human", level=level)
            return
        # TensorFlow's C++ logging: warnings and errors only (its info lines are start-up noise).
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
        _format = "json"
        with _json_stderr(level) as handler:
            yield handler
    finally:
        _format = "human"
        teardown_logging()


def _fail(err: BatchrankError | Interrupted | Exception, code: int, command: str) -> None:
    extra = {"event": "run_failed", "command": command, "exit_code": code}
    extra["error"] = type(err).__name__
    if isinstance(err, Interrupted):
        extra["signal"] = err.signal_name
    if isinstance(err, Interrupted):
        resume = "; run it again to resume" if command == "run" else ""
        log.error("%s%s", err, resume, extra=extra)
    elif isinstance(err, BatchrankError):
        log.error(str(err), extra=extra)
    else:
        log.exception(
            "unexpected error (a bug; please report it with this traceback): %s", err, extra=extra
        )


def log_format_option(func: F) -> F:
    """Add ``--log-format human|json`` (env ``BATCHRANK_LOG_FORMAT``) to a click command.

    Put it under ``@click.command``. It sets up logging before the command body runs (level
    WARNING when the command's ``quiet`` flag is set) and, in JSON mode, captures stderr and
    logs a failure as a ``run_failed`` event. In both modes a signal (SIGTERM, SIGINT, SIGHUP)
    is logged as ``run_failed`` naming it and exits with 128 + its number.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, log_format: str, **kwargs: Any) -> Any:
        command = click.get_current_context().info_name or func.__name__
        with logging_session(log_format, quiet=bool(kwargs.get("quiet"))):
            try:
                return func(*args, **kwargs)
            except Interrupted as err:
                _fail(err, err.exit_code, command)
                code = err.exit_code
            except BatchrankError as err:
                if log_format != "json":
                    raise
                _fail(err, err.exit_code, command)
                code = err.exit_code
            except Exception as err:
                if log_format != "json":
                    raise
                _fail(err, 1, command)
                code = 1
        sys.exit(code)

    option = click.option(
        "--log-format",
        type=click.Choice(["human", "json"]),
        default="human",
        show_default=True,
        envvar="BATCHRANK_LOG_FORMAT",
        show_envvar=True,
        help="json: every stderr line is one JSON object, for log collectors.",
    )
    return option(wrapper)  # type: ignore[return-value]
