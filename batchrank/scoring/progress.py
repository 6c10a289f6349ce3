"""Progress: a rich bar on a terminal, plain periodic log lines otherwise (cron), or nothing."""

from __future__ import annotations

import logging
import sys
import time

__all__ = ["Progress", "make_progress"]

log = logging.getLogger("batchrank.score")


class Progress:
    """Silent progress (``--quiet``); the base of the other two."""

    def __init__(self, total: int | None, unit: str) -> None:
        self.total = total
        self.unit = unit
        self.done = 0
        self.rows = 0
        self.start = time.monotonic()

    def advance(self, work: int, rows: int) -> None:
        """Record ``work`` units (rows or bytes) and ``rows`` pairs done."""
        self.done += work
        self.rows += rows

    def close(self) -> None:
        """Finish the display."""

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LogProgress(Progress):
    """One log line every ``every`` seconds: rows, rows/s, percentage and ETA when known."""

    def __init__(self, total: int | None, unit: str, every: float = 10.0) -> None:
        super().__init__(total, unit)
        self.every = every
        self.last = self.start

    def advance(self, work: int, rows: int) -> None:
        super().advance(work, rows)
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._line(now)

    def _line(self, now: float) -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = self.rows / elapsed
        extra = ""
        if self.total:
            frac = min(self.done / self.total, 1.0)
            eta = elapsed * (1 - frac) / frac if frac > 0 else float("nan")
            extra = f", {100 * frac:.1f}% done, eta {eta:.0f}s"
        log.info(
            "progress: %s rows scored, %s rows/s%s",
            f"{self.rows:,}",
            f"{rate:,.0f}",
            extra,
            extra={"event": "progress", "counts": {"rows": self.rows}},
        )


class BarProgress(Progress):
    """A rich progress bar on stderr with rows/s and an ETA."""

    def __init__(self, total: int | None, unit: str) -> None:
        super().__init__(total, unit)
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        self._bar = RichProgress(
            TextColumn("scoring"),
            BarColumn(),
            MofNCompleteColumn() if unit == "rows" else TextColumn("{task.percentage:>5.1f}%"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task("score", total=total, rate="")

    def advance(self, work: int, rows: int) -> None:
        super().advance(work, rows)
        elapsed = max(time.monotonic() - self.start, 1e-9)
        self._bar.update(self._task, advance=work, rate=f"{self.rows / elapsed:,.0f} rows/s")

    def close(self) -> None:
        self._bar.stop()


def make_progress(mode: str, total: int | None, unit: str) -> Progress:
    """Pick the display: ``auto`` is a bar on a terminal and log lines otherwise."""
    if mode == "none":
        return Progress(total, unit)
    if mode == "bar" or (mode == "auto" and sys.stderr.isatty()):
        return BarProgress(total, unit)
    return LogProgress(total, unit)
