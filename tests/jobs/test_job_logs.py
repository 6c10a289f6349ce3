"""Logging setup: human lines, and JSON lines that carry run_id, job, event and counts."""

from __future__ import annotations

import io
import json
import logging
import warnings
from collections.abc import Iterator

import pytest

from batchrank.logs import set_context, setup_logging, teardown_logging


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    yield
    teardown_logging()
    logging.captureWarnings(False)


def test_json_lines_hold_the_structured_fields() -> None:
    stream = io.StringIO()
    setup_logging("json", stream=stream, context={"job": "nightly"})
    log = logging.getLogger("batchrank.score")
    log.info("plain line")
    set_context(run_id="r42")
    log.info(
        "wrote %d users",
        3,
        extra={"event": "score_done", "run_id": "own-id", "counts": {"rows": 7}, "output": "x"},
    )
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("batchrank.jobs").exception("failed", extra={"event": "run_failed"})
    logging.getLogger("batchrank.jobs").debug("not shown at info level")
    logging.getLogger("some.library").info("not shown: libraries log warnings only")
    logging.getLogger("some.library").warning("shown")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 4
    first, second, third, fourth = lines
    for line in lines:
        assert set(line) >= {
            "timestamp",
            "level",
            "logger",
            "message",
            "event",
            "run_id",
            "job",
            "counts",
        }
        assert line["timestamp"].endswith("Z")
    assert first["job"] == "nightly" and first["run_id"] is None and first["event"] is None
    assert second == {
        **second,
        "level": "info",
        "message": "wrote 3 users",
        "event": "score_done",
        "run_id": "own-id",
        "job": "nightly",
        "counts": {"rows": 7},
        "output": "x",
    }
    assert third["level"] == "error" and third["run_id"] == "r42"
    assert "ValueError: boom" in third["exception"]
    assert fourth["logger"] == "some.library" and fourth["level"] == "warning"


def test_human_lines_and_python_warnings() -> None:
    stream = io.StringIO()
    setup_logging("human", stream=stream)
    logging.getLogger("batchrank.jobs").info("hello %s", "there", extra={"event": "x"})
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("careful", UserWarning, stacklevel=1)
    text = stream.getvalue().splitlines()
    assert text[0].endswith(" INFO  hello there")
    assert "WARNING" in text[1] and "careful" in text[1]


def test_setup_replaces_its_own_handler_only() -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    setup_logging("human", stream=io.StringIO())
    setup_logging("json", stream=io.StringIO())
    added = [h for h in root.handlers if h not in before]
    assert len(added) == 1
    teardown_logging()
    assert list(root.handlers) == before
    with pytest.raises(ValueError, match="log format"):
        setup_logging("xml")  # type: ignore[arg-type]
