"""batchrank: offline batch scoring of recommendation ranking models.

The public API is imported lazily, so ``import batchrank`` (and ``batchrank --help``) stays fast
and never imports TensorFlow or Keras until a function needs them.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batchrank.jobs.runner import RunResult

__version__ = "0.1.0"

__all__ = [
    "RunResult",
    "__version__",
    "bundle_from_keras",
    "evaluate",
    "load_bundle",
    "run_job",
    "score",
    "train",
]

_LAZY = {
    "train": "batchrank.training",
    "evaluate": "batchrank.evaluation",
    "load_bundle": "batchrank.bundle",
    "bundle_from_keras": "batchrank.importer",
    "score": "batchrank.scoring.api",
    "RunResult": "batchrank.jobs.runner",
}


def _run_date(date: object) -> _dt.date | None:
    from batchrank.errors import ConfigError
    from batchrank.jobs.loader import parse_date

    if date is None:
        return None
    if isinstance(date, _dt.datetime):
        return date.date()
    if isinstance(date, _dt.date):
        return date
    if isinstance(date, str):
        return parse_date(date.strip())
    raise ConfigError(
        f"date must be a datetime.date or a YYYY-MM-DD string; received {type(date).__name__} "
        f"{date!r}"
    )


def _override_texts(overrides: object) -> tuple[str, ...]:
    """``SECTION.KEY=VALUE`` texts from a sequence of them, one text, or a mapping."""
    import json

    from batchrank.errors import ConfigError

    if isinstance(overrides, str):
        return (overrides,)
    if isinstance(overrides, Mapping):
        texts = []
        for key, value in overrides.items():
            if isinstance(value, str):
                texts.append(f"{key}={value}")
            elif isinstance(value, Path):
                texts.append(f"{key}={json.dumps(str(value))}")
            else:  # numbers, booleans and lists: JSON's spelling is TOML's
                texts.append(f"{key}={json.dumps(value)}")
        return tuple(texts)
    if isinstance(overrides, Sequence) and all(isinstance(o, str) for o in overrides):
        return tuple(overrides)
    raise ConfigError(
        "overrides must be SECTION.KEY=VALUE strings or a mapping of SECTION.KEY to values; "
        f"received {overrides!r}"
    )


def run_job(
    path: str | Path,
    *,
    date: _dt.date | str | None = None,
    overrides: Sequence[str] | Mapping[str, Any] = (),
    environ: Mapping[str, str] | None = None,
    fresh: bool = False,
    progress: str = "log",
) -> RunResult:
    """Run a job file as ``batchrank run`` does, for orchestrators (Airflow, Dagster, cron).

    The same lock (a second concurrent call raises :class:`~batchrank.errors.LockedError`), the
    same resume of an interrupted run of the job and date, the same ``_SUCCESS`` marker and
    ``latest`` pointer. Nothing is printed; progress and events go to the ``batchrank`` loggers.

    Args:
        path: the job file.
        date: the run date: a ``datetime.date`` (or ``datetime``) or a ``YYYY-MM-DD`` string, as
            templating produces (default: today).
        overrides: ``SECTION.KEY=VALUE`` texts as ``--set`` takes, or a mapping such as
            ``{"score.top_k": 20}``; string values are parsed as on the command line, so
            ``"20"`` is the number 20.
        environ: where ``BATCHRANK_<SECTION>_<KEY>`` overrides come from (default:
            ``os.environ``; ``{}`` ignores the environment).
        fresh: discard what an interrupted run of this job and date finished.
        progress: ``log`` (periodic log lines), ``none``, ``bar`` or ``auto``.

    Returns:
        What was published: output, manifest, ``_SUCCESS``, ``latest``, counts.

    Raises:
        BatchrankError: the subclass says what failed (its ``exit_code`` is the CLI's).
    """
    from batchrank.errors import ConfigError
    from batchrank.jobs.loader import load_job
    from batchrank.jobs.runner import run_job as _run

    if progress not in ("log", "none", "bar", "auto"):
        raise ConfigError(f"progress must be log, none, bar or auto; received {progress!r}")
    job = load_job(
        path, overrides=_override_texts(overrides), environ=environ, date=_run_date(date)
    )
    return _run(job, fresh=bool(fresh), progress=progress)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'batchrank' has no attribute {name!r}")
