"""One run at a time: an OS lock (``fcntl.flock``) on a file beside the outputs.

A job holds one per job (whatever the date); every ``score`` run holds one per output path, so
two runs writing the same ``--out`` cannot mix their files.

The lock belongs to the open file, not to the file's existence: the kernel releases it when the
process ends, however it ends (``kill -9`` included), so a crashed run never leaves a stale
lock behind. The file also records who holds it (pid, host, run id, start time), for the message
a second run prints; that record is informational only, never what decides.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import socket
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from batchrank.errors import LockedError, OutputError
from batchrank.fs import is_remote, local_folder_for

__all__ = ["JobLock", "lock_holder", "output_lock", "output_lock_path"]


def _describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return ""
    parts = []
    if holder.get("pid"):
        parts.append(f"pid {holder['pid']}")
    if holder.get("host"):
        parts.append(f"on {holder['host']}")
    if holder.get("run_id"):
        parts.append(f"run {holder['run_id']}")
    if holder.get("date"):
        parts.append(f"date {holder['date']}")
    if holder.get("since"):
        parts.append(f"since {holder['since']}")
    return f" ({', '.join(parts)})" if parts else ""


def _read_holder(f: IO[str]) -> dict[str, Any] | None:
    try:
        f.seek(0)
        data = json.loads(f.read() or "null")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def lock_holder(path: Path) -> dict[str, Any] | None:
    """Who holds the lock at ``path`` now, or None when nobody does. Creates nothing.

    Returns:
        The holder's record (``pid``, ``host``, ``run_id``, ``date``, ``since``), or an empty
        dict when the lock is held but the record is unreadable.
    """
    try:
        f = path.open("r", encoding="utf-8")
    except OSError:
        return None
    with f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(f) or {}
        except OSError:
            return None
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    return None


class JobLock:
    """An exclusive, non-blocking lock for one job.

    Use as a context manager, or call :meth:`acquire` and :meth:`release`::

        with JobLock(path, job="nightly", run_id=run_id, date="2025-01-31"):
            ...
    """

    def __init__(
        self,
        path: Path,
        *,
        job: str,
        run_id: str = "",
        date: str = "",
        subject: str = "",
        remove: bool = False,
    ) -> None:
        """Prepare (but do not take) the lock at ``path`` for ``job``.

        Args:
            subject: what the lock guards, for the message (default: "job `<job>`").
            remove: delete the lock file on release (an output folder stays clean). Taking
                the lock then checks that the locked file is still the one at ``path``, and
                retries otherwise, so a release racing with a new run never lets two hold it.
        """
        self.remove = remove
        self.path = Path(path)
        self.job = job
        self.subject = subject or f"job `{job}`"
        self.run_id = run_id
        self.date = date
        self._file: IO[str] | None = None
        self._since = ""

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._file is not None

    def acquire(self) -> None:
        """Take the lock at once, or fail.

        Raises:
            LockedError: another process holds it (the message says which, when known).
            OutputError: the lock file cannot be created.
        """
        if self._file is not None:
            return
        for _ in range(100):
            f = self._lock_once()
            if not self.remove or self._is_current(f):
                break
            f.close()  # released and removed between our open and our lock: take the new one
        else:
            raise OutputError(f"{self.path}: cannot lock (the lock file keeps changing)")
        self._file = f
        self._since = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self._write_record()

    def _is_current(self, f: IO[str]) -> bool:
        try:
            return os.fstat(f.fileno()).st_ino == os.stat(self.path).st_ino
        except OSError:
            return False

    def _lock_once(self) -> IO[str]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            f = self.path.open("a+", encoding="utf-8")
        except OSError as e:
            raise OutputError(f"{self.path}: cannot create the lock file ({e.strerror})") from e
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(f)
            f.close()
            raise LockedError(
                f"{self.subject} is already running{_describe(holder)}; lock {self.path} is "
                "held, so this run exits without doing anything"
            ) from None
        except OSError as e:
            f.close()
            raise OutputError(f"{self.path}: cannot lock ({e.strerror})") from e
        return f

    def _write_record(self) -> None:
        if self._file is None:
            return
        record = {
            "job": self.job,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "run_id": self.run_id,
            "date": self.date,
            "since": self._since,
        }
        with contextlib.suppress(OSError):
            self._file.seek(0)
            self._file.truncate()
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()

    def set_run_id(self, run_id: str) -> None:
        """Record the run id in the held lock's file (known only once the lock is taken)."""
        self.run_id = run_id
        self._write_record()

    def release(self) -> None:
        """Release the lock (the file stays: removing it would race with the next run)."""
        f, self._file = self._file, None
        if f is None:
            return
        if self.remove:
            with contextlib.suppress(OSError):
                self.path.unlink()  # while still held: a waiting run re-checks the inode
        with contextlib.suppress(OSError):
            f.seek(0)
            f.truncate()
            f.flush()
        with contextlib.suppress(OSError):
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        f.close()

    def __enter__(self) -> JobLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def output_lock_path(out: Path) -> Path:
    """The lock file of one output path: ``.{name}.batchrank-lock`` beside it; for an
    object-store output (flock cannot guard a bucket) in the local lock folder
    (:func:`batchrank.fs.local_folder_for`; set ``[storage] lock_dir`` or
    ``BATCHRANK_LOCK_DIR`` to a folder every host shares when runs may start on several)."""
    return local_folder_for(out.parent, "locks") / f".{out.name}.batchrank-lock"


def output_lock(out: Path, run_id: str = "") -> JobLock:
    """The lock a ``score`` run holds on its output path for its whole run."""
    return JobLock(
        output_lock_path(out),
        job="score",
        run_id=run_id,
        subject=f"a run writing {out.display() if is_remote(out) else out}",
        remove=True,
    )
