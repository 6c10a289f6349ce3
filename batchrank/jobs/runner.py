"""Running a job: lock, resume state, train if needed, score, publish, clean up.

A run is identified by its job and date. Its work folder
(``<output folder>/.batchrank-work/<job>-<date>/``, on the object store too when the output is
remote: a run rescheduled on another machine resumes) holds ``run.json`` (the run id and what
is done) and the scorer's finished fragments. A run that dies, ``kill -9`` included, leaves the
folder behind; the next run of the same job and date adopts its run id, keeps the bundle it
trained and resumes from its fragments, so the output is the one an uninterrupted run writes.
After a successful publish the folder is removed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchrank.errors import OutputError
from batchrank.fs import configure, filesystem_of, is_remote
from batchrank.jobs.checks import preflight
from batchrank.jobs.gate import check_gate
from batchrank.jobs.jobspec import JobSpec
from batchrank.jobs.publish import SUCCESS_NAME, success_certificate, update_latest
from batchrank.jobs.retrain import decide, train_step
from batchrank.logs import set_context
from batchrank.scoring.commit import Certificate, manifest_path_of
from batchrank.scoring.guards import check_output_paths
from batchrank.scoring.rules import rule_inputs
from batchrank.storage import atomic_file, ensure_folder
from batchrank.storage.lock import JobLock

__all__ = ["STATE_FILE", "RunResult", "new_run_id", "run_job"]

log = logging.getLogger("batchrank.jobs")

STATE_FILE = "run.json"
"""The run's state file inside its work folder."""


@dataclass(frozen=True, kw_only=True)
class RunResult:
    """What a successful run produced."""

    job: str
    """The job's name."""
    date: dt.date
    """The run date."""
    run_id: str
    """The run id (adopted from the interrupted attempt when resuming)."""
    output: Path
    """The committed output file (a folder of part files with ``max_rows_per_file``)."""
    manifest_path: Path
    """The output's manifest."""
    manifest: dict[str, Any]
    """The manifest's content."""
    success: Path | None
    """The ``_SUCCESS`` marker, if written."""
    latest: Path | None
    """The ``latest`` pointer, if enabled."""
    latest_updated: bool
    """Whether ``latest`` now names this output (a backfill leaves it on a later date)."""
    trained: bool
    """Whether this run trained a new bundle."""
    train_reason: str
    """Why it trained or did not (empty without a ``[train]`` step)."""
    resumed: bool
    """Whether the run picked up an interrupted attempt's work."""
    rejects: Path | None = None
    """The rejects file, if any."""
    files: list[Path] = field(default_factory=list)
    """The files listed in ``_SUCCESS``."""


def new_run_id() -> str:
    """A fresh run id: 12 hex digits."""
    return uuid.uuid4().hex[:12]


def _read_state(work: Path, job: JobSpec) -> dict[str, Any] | None:
    try:
        state = json.loads((work / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (
        not isinstance(state, dict)
        or state.get("job") != job.name
        or state.get("date") != job.date.isoformat()
        or not isinstance(state.get("run_id"), str)
    ):
        return None
    return state


def _write_state(work: Path, state: dict[str, Any]) -> None:
    try:
        if not is_remote(work):  # an object store has no folders to create
            work.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{work}: cannot create the work folder ({e.strerror})") from e
    with atomic_file(work / STATE_FILE) as tmp:
        tmp.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")


def _remove_work(work: Path) -> None:
    if is_remote(work):  # every object under the prefix: run.json, fragments, staging
        with contextlib.suppress(OSError):
            for path, _ in work.iter_files():
                fs, p = filesystem_of(path)
                fs.delete_file(p)
        return
    shutil.rmtree(work, ignore_errors=True)
    with contextlib.suppress(OSError):
        work.parent.rmdir()  # only when no other run's work is left there


_PROBE_RUN_ID = "0" * 12


def _check_paths(job: JobSpec, output: Path, run_id: str) -> None:
    """Before any work: the scorer's output-path checks, then that the output folder and
    ``latest`` can be written (:func:`batchrank.jobs.checks.preflight`), so a run never fails
    only after training or publishing."""
    s = job.score
    check_output_paths(
        out=output,
        rejects=job.rejects(run_id),
        pairs=s.pairs,
        model=s.model,
        items=s.items,
        users=s.users,
        inputs=rule_inputs(s.options),
        parts=s.max_rows_per_file is not None,
        table=s.options.is_table,
    )
    preflight(job)


def _train(job: JobSpec, state: dict[str, Any], work: Path, verbose: int | str) -> tuple[bool, str]:
    step = job.train
    if step is None:
        return False, ""
    decision = decide(step, trained_by_this_run=state.get("trained_fingerprint"))
    if not decision.train:
        log.info(
            "training skipped: %s",
            decision.reason,
            extra={"event": "train_skipped", "reason": decision.reason},
        )
        return False, decision.reason
    log.info(
        "training %s (preset %s) into %s: %s",
        step.ratings,
        step.preset,
        step.out,
        decision.reason,
        extra={"event": "train_start", "reason": decision.reason},
    )
    meta = train_step(step, decision.data, verbose=verbose)
    metrics = meta.get("metrics", {})
    if "test_rmse" in metrics:
        message = "trained: held-out RMSE %.4f stars (global mean %.4f) after %d epochs"
        args: tuple[Any, ...] = (metrics["test_rmse"], metrics["test_rmse_global_mean"])
    else:  # [train] test_fraction = 0: there is nothing to measure, not a NaN
        message = "trained: no held-out test (all %d ratings trained on) after %d epochs"
        args = (metrics.get("train_count", 0),)
    log.info(
        message,
        *args,
        metrics.get("epochs_run", 0),
        extra={
            "event": "train_done",
            "counts": {
                "ratings": meta.get("data", {}).get("ratings"),
                "epochs_run": metrics.get("epochs_run"),
            },
            "metrics": metrics,
        },
    )
    state["trained_fingerprint"] = meta.get("model_fingerprint")
    _write_state(work, state)
    return True, decision.reason


def _score(
    job: JobSpec,
    run_id: str,
    work: Path,
    progress: str,
    extra: dict[str, Any],
    certificates: Sequence[Certificate],
) -> dict[str, Any]:
    from batchrank.scoring.api import score_spec

    spec = job.score.spec(run_id, work_dir=work, progress=progress, extra_manifest={"job": extra})
    return score_spec(spec, certificates=certificates, publish=job.publish.redis)


def run_job(
    job: JobSpec,
    *,
    fresh: bool = False,
    progress: str = "auto",
    train_verbose: int | str = 0,
) -> RunResult:
    """Run a validated job once: the ``batchrank run`` command without its printing.

    Args:
        job: from :func:`batchrank.jobs.loader.load_job`.
        fresh: discard the progress an interrupted run of the same job and date left.
        progress: the scorer's progress display (``auto``, ``bar``, ``log`` or ``none``).
        train_verbose: Keras' ``verbose`` while training.

    Raises:
        LockedError: another run of the job holds its lock (nothing was done).
        BatchrankError: a subclass per kind of problem.
    """
    configure(job.storage)  # the job's [storage] (the loader set it too; a caller may not)
    for warning in job.warnings:
        log.warning(warning, extra={"event": "job_warning"})
    set_context(job=job.name)
    # Before the lock creates any folder: the paths' relations do not depend on the run id.
    _check_paths(job, job.output(_PROBE_RUN_ID), _PROBE_RUN_ID)
    lock = JobLock(job.lock_path, job=job.name, date=job.date.isoformat())
    with lock:
        work = job.work_dir
        if fresh and work.exists():
            _remove_work(work) if is_remote(work) else shutil.rmtree(work)
            log.info("discarded earlier progress in %s (--fresh)", work, extra={"event": "fresh"})
        state = _read_state(work, job)
        resumed = state is not None
        if state is None:
            state = {
                "job": job.name,
                "date": job.date.isoformat(),
                "run_id": new_run_id(),
                "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            }
        run_id: str = state["run_id"]
        lock.set_run_id(run_id)
        set_context(run_id=run_id)
        output = job.output(run_id)
        log.info(
            "%s job %s for %s (run %s)",
            "resuming" if resumed else "starting",
            job.name,
            job.date.isoformat(),
            run_id,
            extra={"event": "run_start", "date": job.date.isoformat(), "resumed": resumed},
        )
        ensure_folder(output.parent)
        _write_state(work, state)
        trained, reason = _train(job, state, work, train_verbose)
        gate = check_gate(job, job.score.model)  # before scoring: a failed gate writes nothing
        extra = {
            "name": job.name,
            "file": str(job.source.resolve()),
            "date": job.date.isoformat(),
            "overrides": list(job.overrides),  # redacted when read (sections.collect)
            "trained": trained,
            "train_reason": reason,
        }
        if gate is not None:
            extra["gate"] = gate
        folder = output.parent
        certificates = (
            [success_certificate(folder, job=job.name, date=job.date, run_id=run_id)]
            if job.publish.success_marker
            else []
        )
        manifest = _score(job, run_id, work, progress, extra, certificates)
        manifest_path = manifest_path_of(output)
        rejects = job.rejects(run_id)
        # the data files the manifest lists: the output, or each of its parts
        files = [output.parent / f["path"] for f in manifest["files"]] + [manifest_path]
        if rejects is not None:
            files.append(rejects)
        success = folder / SUCCESS_NAME if job.publish.success_marker else None
        latest = job.latest_path
        latest_updated = update_latest(latest, output, date=job.date) if latest else False
        _remove_work(work)
        resume = manifest.get("resume", {})
        log.info(
            "published %s%s",
            output,
            f" ({resume.get('fragments_resumed')} of {resume.get('fragments')} fragments resumed)"
            if resumed
            else "",
            extra={
                "event": "run_done",
                "counts": {
                    "rows_read": manifest["counts"]["rows_read"],
                    "rows_scored": manifest["counts"]["rows_scored"],
                    "users_written": manifest["counts"]["users_written"],
                    "rows_written": manifest["counts"]["rows_written"],
                    "fragments": resume.get("fragments"),
                    "fragments_resumed": resume.get("fragments_resumed"),
                },
                "output": str(output),
                "success": str(success) if success else None,
                "latest": str(latest) if latest else None,
            },
        )
    return RunResult(
        job=job.name,
        date=job.date,
        run_id=run_id,
        output=output,
        manifest_path=manifest_path,
        manifest=manifest,
        success=success,
        latest=latest,
        latest_updated=latest_updated,
        trained=trained,
        train_reason=reason,
        resumed=resumed,
        rejects=rejects,
        files=files,
    )
