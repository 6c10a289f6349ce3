"""One error hierarchy for batchrank, each class mapped to a documented exit code.

Exit codes (also in ``batchrank --help`` and the README):

====  ==========================================================
0     success
1     anything unexpected (a bug: please report it with the traceback)
2     usage or job-file error (:class:`ConfigError`)
3     input data error (:class:`DataError`)
4     model error (:class:`ModelError`)
5     output or I/O error (:class:`OutputError`)
6     another run of the same job holds the lock (:class:`LockedError`)
7     a job's quality gate failed: nothing published (:class:`QualityGateError`)
====  ==========================================================

Messages follow one style: lowercase, name the file / row / column / key and the value
received, and say what was expected.
"""

from __future__ import annotations

__all__ = [
    "EXIT_CODES",
    "BatchrankError",
    "ConfigError",
    "DataError",
    "LockedError",
    "ModelError",
    "OutputError",
    "QualityGateError",
    "first_line",
]


class BatchrankError(Exception):
    """Base of every error batchrank reports to the user without a traceback."""

    exit_code: int = 1


class ConfigError(BatchrankError):
    """A bad option, flag combination or job file."""

    exit_code = 2


class DataError(BatchrankError):
    """Input data that cannot be used: missing columns, corrupt files, bad ids or ratings.

    Attributes:
        file: the file at fault, when one is (as named in the message).
        row: its 1-based data row, when one is known.
        detail: the message after ``"FILE row ROW: "``, for errors built by :meth:`at`.
    """

    exit_code = 3

    def __init__(
        self,
        message: str = "",
        *,
        file: str | None = None,
        row: int | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.file = file
        self.row = row
        self.detail = detail

    def __reduce__(self) -> tuple[object, ...]:
        # keep the fields across pickling (Ray sends errors between processes)
        fields = {"file": self.file, "row": self.row, "detail": self.detail}
        return (_rebuild, (type(self), str(self), fields))

    @classmethod
    def at(cls, file: object, row: int | None, detail: str) -> DataError:
        """An error about one row of a file: ``"FILE row ROW: DETAIL"`` (``"FILE: DETAIL"``)."""
        where = f"{file} row {row}" if row is not None else f"{file}"
        return cls(f"{where}: {detail}", file=str(file), row=row, detail=detail)

    def shifted(self, rows: int) -> DataError:
        """The same error ``rows`` rows further down its file (a slice's row made the file's)."""
        if self.file is None or self.row is None or self.detail is None:
            return self
        return type(self).at(self.file, self.row + rows, self.detail)


class ModelError(BatchrankError):
    """A model bundle that is missing, corrupt, foreign or of an unsupported version."""

    exit_code = 4


class OutputError(BatchrankError):
    """An output that cannot be written or committed."""

    exit_code = 5


class LockedError(BatchrankError):
    """Another run of the same job holds its lock."""

    exit_code = 6


class QualityGateError(BatchrankError):
    """A job's ``[gate]`` refused the new model's lists; nothing was published.

    Attributes:
        failures: one line per failed check (metric, value, threshold, by how much).
    """

    exit_code = 7

    def __init__(self, message: str = "", *, failures: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.failures = failures


def _rebuild(cls: type[DataError], message: str, fields: dict[str, object]) -> DataError:
    return cls(message, **fields)  # type: ignore[arg-type]


def first_line(e: object) -> str:
    """The first line of an exception's message (or its type's name), for one-line errors."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "unexpected error (a bug; the traceback is printed)",
    2: "usage or job-file error",
    3: "input data error",
    4: "model error",
    5: "output or I/O error",
    6: "another run of the same job holds the lock",
    7: "a job's quality gate failed (nothing published)",
}


class Interrupted(BaseException):
    """The process received SIGTERM, SIGINT or SIGHUP; raised by the CLI's signal handlers.

    A ``BaseException`` like :class:`KeyboardInterrupt`, so ``except Exception`` blocks that turn
    library errors into one-line errors do not swallow it, while ``finally`` blocks and the
    writers' ``except BaseException`` discard paths still run: temp files are removed and locks
    released as the stack unwinds. The exit code is the shell's 128 + signal number.
    """

    def __init__(self, signum: int) -> None:
        import signal

        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        self.exit_code = 128 + signum
        super().__init__(
            f"stopped by {self.signal_name} (signal {signum}); temporary files removed, "
            "nothing published"
        )


EXIT_CODES.update(
    {
        129: "stopped by SIGHUP (128 + 1)",
        130: "stopped by SIGINT, Ctrl-C (128 + 2)",
        143: "stopped by SIGTERM (128 + 15)",
    }
)
__all__ += ["Interrupted"]
