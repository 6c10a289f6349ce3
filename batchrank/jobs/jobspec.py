"""The typed, frozen form of a job file (``jobs/*.toml``).

A job file has a ``[job]`` section, an optional ``[train]`` step, a ``[score]`` step and an
optional ``[publish]`` section. :func:`batchrank.jobs.loader.load_job` reads and validates a
file into a :class:`JobSpec`; every path in it is absolute and, except the templated outputs of
the score step, already rendered for the run date.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from batchrank.fs import StorageOptions, local_folder_for
from batchrank.jobs.paths import PathTemplate
from batchrank.scoring.spec import ScoreSpec
from batchrank.sinks.redis.target import RedisTarget

__all__ = [
    "WORK_FOLDER",
    "GateStep",
    "JobInfo",
    "JobSpec",
    "PresetName",
    "PublishStep",
    "Retrain",
    "ScoreStep",
    "TrainStep",
]

Retrain = Literal["always", "if-missing", "if-data-changed"]
PresetName = Literal["seed", "default", "features"]

WORK_FOLDER = ".batchrank-work"
"""Name of the folder, beside a job's output, that records a run's finished fragments."""


@dataclass(frozen=True, kw_only=True)
class JobInfo:
    """The ``[job]`` section."""

    name: str
    """The job's name: identifies its lock and work folder and fills ``{job}``."""
    description: str = ""
    """Free text, for people."""
    lock_dir: Path | None = None
    """Folder of the job's lock file (default: the static part of the output path)."""
    preview_users: int = 0
    """Users whose lists a successful run prints (0: none)."""


@dataclass(frozen=True, kw_only=True)
class TrainStep:
    """The optional ``[train]`` section: train a bundle before scoring, when needed."""

    ratings: str
    """Ratings: an absolute path (CSV/Parquet file, MovieLens folder or zip) or ``tfds:NAME``."""
    out: Path
    """Bundle folder to write."""
    items: Path | None = None
    """Items file with titles."""
    preset: PresetName = "default"
    """Training preset."""
    retrain: Retrain = "if-missing"
    """``always``; ``if-missing`` (no bundle at ``out``); ``if-data-changed`` (the ratings'
    fingerprint or the hyper-parameters differ from the bundle's)."""
    epochs: int | None = None
    """Override of the preset's epochs."""
    rating_scale: tuple[float, float] | None = None
    """``(min, max)`` of the ratings (default: the data's)."""
    user_col: str = "user_id"
    """User id column of the ratings file."""
    item_col: str = "movie_id"
    """Movie id column of the ratings and items files."""
    rating_col: str = "rating"
    """Rating column of the ratings file."""
    title_col: str = "title"
    """Title column of the items file."""
    seed: int | None = None
    """Seed of the split and initialisation (default: the preset's)."""
    test_fraction: float | None = None
    """Share of ratings held out (default: the preset's)."""
    test_ratings: str | None = None
    """Separate held-out ratings, evaluated instead of a split (then the split defaults to 0)."""

    @property
    def is_tfds(self) -> bool:
        """Whether the ratings come from tensorflow-datasets."""
        return self.ratings.startswith("tfds:")


@dataclass(frozen=True, kw_only=True)
class ScoreStep:
    """The ``[score]`` section: validated score options, with the output paths as templates.

    Its keys are the options of :class:`~batchrank.scoring.spec.ScoreSpec` (not declared again
    here); read them as attributes (``job.score.top_k``) or as :attr:`options`.
    """

    options: ScoreSpec
    """Every option, validated, with ``out`` and ``rejects`` rendered for the run id
    ``<run_id>``; :meth:`spec` gives the spec of an actual run."""
    out: PathTemplate
    """Output file; may hold ``{date}``, ``{job}`` and ``{run_id}``."""
    rejects: PathTemplate | None = None
    """CSV file receiving rejected rows; may hold the same placeholders."""

    def spec(self, run_id: str, **run: Any) -> ScoreSpec:
        """The spec of one run: the paths rendered for ``run_id``, plus run-only fields
        (``work_dir``, ``progress``, ``extra_manifest``)."""
        rejects = self.rejects.render(run_id) if self.rejects is not None else None
        return replace(
            self.options, out=self.out.render(run_id), rejects=rejects, run_id=run_id, **run
        )

    def __getattr__(self, name: str) -> Any:
        """The options read as attributes: ``job.score.top_k`` is ``job.score.options.top_k``."""
        options = self.__dict__.get("options")
        if options is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(options, name)


@dataclass(frozen=True, kw_only=True)
class GateStep:
    """The optional ``[gate]`` section: what the new model's lists must reach before publishing.

    Checked after training and before scoring (:mod:`batchrank.jobs.gate`); a failed check
    publishes nothing and exits 7 (:class:`~batchrank.errors.QualityGateError`).
    """

    ratings: Path
    """Held-out ratings the metrics are computed on."""
    exclude: tuple[str, ...]
    """Training interactions, excluded from the lists (default: the ``[score]`` exclude)."""
    k: int = 10
    """Cut-off of the ranking metrics (default: the ``[score]`` top_k)."""
    relevance: float | None = None
    """A rating at least this is relevant (default: 4 on 1..5, scaled)."""
    min_ndcg: float | None = None
    """Smallest NDCG@k allowed."""
    min_recall: float | None = None
    """Smallest Recall@k allowed."""
    max_rmse: float | None = None
    """Largest RMSE (stars) on ``ratings`` allowed."""
    max_drop: float | None = None
    """Largest fall of NDCG@k (and Recall@k) from the previous published run's, absolute."""

    @property
    def needs_ranking(self) -> bool:
        """Whether a ranking metric is checked."""
        return any(v is not None for v in (self.min_ndcg, self.min_recall, self.max_drop))


@dataclass(frozen=True, kw_only=True)
class PublishStep:
    """The optional ``[publish]`` section: what downstream systems watch."""

    success_marker: bool = True
    """Write ``_SUCCESS`` (listing the files) beside the output once it is committed."""
    latest: Path | None = None
    """The ``latest`` pointer file, or None for none."""
    redis: RedisTarget | None = None
    """The ``[publish.redis]`` target (its prefix's ``{job}`` filled in), or None."""


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """A validated job, for one run date."""

    source: Path
    """The job file, as given."""
    date: dt.date
    """The run date (fills ``{date}``)."""
    job: JobInfo
    """The ``[job]`` section."""
    train: TrainStep | None
    """The ``[train]`` step, if any."""
    score: ScoreStep
    """The ``[score]`` step."""
    publish: PublishStep
    """The ``[publish]`` section (defaults when absent)."""
    gate: GateStep | None = None
    """The ``[gate]`` section, if any."""
    overrides: tuple[str, ...] = ()
    """The overrides applied on top of the file (``--set`` and environment), for the record."""
    warnings: tuple[str, ...] = ()
    """Things that are allowed but probably unintended."""
    storage: StorageOptions = field(default_factory=StorageOptions)
    """The ``[storage]`` section: object-store region, endpoint, anonymous, lock folder."""

    @property
    def name(self) -> str:
        """The job's name."""
        return self.job.name

    def output(self, run_id: str) -> Path:
        """The score step's output file for a run."""
        return self.score.out.render(run_id)

    def rejects(self, run_id: str) -> Path | None:
        """The rejects file for a run, if any."""
        return self.score.rejects.render(run_id) if self.score.rejects is not None else None

    @property
    def export_root(self) -> Path:
        """The static part of the output path: same for every run of the job."""
        return self.score.out.static_root

    @property
    def work_dir(self) -> Path:
        """Where a run records finished fragments: ``<out folder>/.batchrank-work/<job>-<date>``,
        on the object store when the output is remote (a rescheduled run resumes on any machine;
        the ``.`` folder is never part of the export, and is emptied once the run commits)."""
        base = self.score.out.run_independent_folder
        return base / WORK_FOLDER / f"{self.name}-{self.date.isoformat()}"

    @property
    def lock_path(self) -> Path:
        """The job's lock file (one per job, whatever the date)."""
        folder = self.job.lock_dir if self.job.lock_dir is not None else self.export_root
        return local_folder_for(folder, "locks") / f".batchrank-{self.name}.lock"

    @property
    def latest_path(self) -> Path | None:
        """The ``latest`` pointer, or None when disabled."""
        return self.publish.latest
