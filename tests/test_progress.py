"""The progress log lines people read in cron mail: counts with thousands separators."""

from __future__ import annotations

import logging

import pytest

from batchrank.scoring.progress import LogProgress


def test_log_progress_uses_thousands_separators(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="batchrank.score")
    progress = LogProgress(total=4_000_000, unit="rows", every=0.0)
    progress.start -= 2.0  # two seconds in: 1,234,567 rows at about 617,284 rows/s
    progress.advance(1_234_567, 1_234_567)
    (record,) = [r for r in caplog.records if getattr(r, "event", None) == "progress"]
    message = record.getMessage()
    assert message.startswith("progress: 1,234,567 rows scored, 6")
    assert " rows/s, 30.9% done" in message
    assert record.counts == {"rows": 1_234_567}  # type: ignore[attr-defined]
