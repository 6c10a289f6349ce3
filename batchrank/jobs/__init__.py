"""Declarative jobs for unattended runs: job files, locking, resume, publishing.

``batchrank run JOB.toml`` and ``batchrank validate JOB.toml`` are thin layers over
:func:`load_job` (here), :func:`batchrank.jobs.runner.run_job` and
:func:`batchrank.jobs.checks.validate_job` (imported from their modules, which load more).
"""

from __future__ import annotations

from batchrank.jobs.jobspec import JobInfo, JobSpec, PublishStep, ScoreStep, TrainStep
from batchrank.jobs.loader import load_job, parse_date

__all__ = [
    "JobInfo",
    "JobSpec",
    "PublishStep",
    "ScoreStep",
    "TrainStep",
    "load_job",
    "parse_date",
]
