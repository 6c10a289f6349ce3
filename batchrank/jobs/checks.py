"""``batchrank validate``: check a job's model, inputs and outputs without doing any work.

Inputs are checked from their first rows only (Parquet footers, CSV headers and a handful of
rows), outputs by creating and removing an anonymous temporary file in the nearest existing
folder. Nothing is written, trained or scored.
"""

from __future__ import annotations

import dataclasses
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchrank.bundle import read_metadata
from batchrank.errors import ConfigError, DataError, OutputError, first_line
from batchrank.fs import ObjectPath, is_remote
from batchrank.jobs.jobspec import JobSpec, TrainStep
from batchrank.jobs.paths import shown
from batchrank.scoring.guards import check_bucket
from batchrank.scoring.spec import ScoreSpec
from batchrank.storage import check_target
from batchrank.storage.lock import lock_holder

__all__ = ["PEEK_ROWS", "Check", "check_latest", "preflight", "validate_job"]

PEEK_ROWS = 100
"""Rows read from the start of each input file."""


@dataclass(frozen=True, kw_only=True)
class Check:
    """One passed check."""

    name: str
    """What was checked (``model``, ``pairs``, ...)."""
    detail: str
    """What was found."""
    warning: bool = False
    """Not a pass: something that could not be checked (a network source), shown as a warning."""


Report = Callable[[Check], None]


def _peek(path: Path, columns: Sequence[str], what: str) -> Any:
    """The first rows of a CSV or Parquet file, its columns checked."""
    import polars as pl

    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            df = pl.scan_parquet(path).head(PEEK_ROWS).collect()
        elif suffix in (".csv", ".tsv", ".txt"):
            sep = "\t" if suffix == ".tsv" else ","
            df = pl.read_csv(path, n_rows=PEEK_ROWS, separator=sep, infer_schema_length=PEEK_ROWS)
        else:
            raise DataError(
                f"{path}: unknown {what} file type {suffix!r}; expected .csv or .parquet"
            )
    except DataError:
        raise
    except Exception as e:  # polars raises many types for unreadable files
        raise DataError(f"{path}: cannot read {what} file: {first_line(e)}") from e
    missing = [c for c in dict.fromkeys(columns) if c not in df.columns]
    if missing:
        found = ", ".join(f"`{c}`" for c in df.columns) or "no columns"
        miss = ", ".join(f"`{c}`" for c in missing)
        raise DataError(f"{path}: {what} column {miss} missing; found {found}")
    return df


def _items(path: Path, item_col: str, title_col: str) -> str:
    """Read an items source as training and scoring will (items files are small)."""
    from batchrank.sources import Columns, load_items

    titles = load_items(path, Columns(item=item_col, title=title_col))
    return f"{shown(path)}: {titles.num_rows} titles"


def _ratings_source(step: TrainStep) -> Check:
    if step.is_tfds:
        from batchrank.tfds_source import require_tfds

        require_tfds(str(step.ratings))
        return Check(
            name="ratings",
            detail=f"{step.ratings}: NOT CHECKED: a network source (tensorflow-datasets "
            "downloads it on first use; without network or a cached copy the run fails); "
            "a local MovieLens folder or file can be checked",
            warning=True,
        )
    return Check(name="ratings", detail=_local_ratings(step))


def _local_ratings(step: TrainStep) -> str:
    path = Path(step.ratings)
    if path.is_dir():
        if not (path / "u.data").exists():
            raise DataError(f"{path}: not a MovieLens 100K folder (no u.data)")
        return f"{shown(path)}: MovieLens folder"
    if path.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(path) as zf:
                if not any(n.endswith("u.data") for n in zf.namelist()):
                    raise DataError(f"{path}: zip holds no u.data; expected MovieLens 100K")
        except zipfile.BadZipFile as e:
            raise DataError(f"{path}: corrupt zip file ({e})") from e
        return f"{shown(path)}: MovieLens zip"
    df = _peek(path, [step.user_col, step.item_col, step.rating_col], "ratings")
    return f"{shown(path)}: columns {', '.join(df.columns)}"


def _writable(folder: Path) -> str:
    """Whether files can be created in ``folder`` (or in the folders that would be made)."""
    if is_remote(folder):
        return _bucket_reachable(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"{folder}: cannot be created ({probe} is a file)")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise OutputError(f"{folder}: not writable ({probe}: {e.strerror})") from e
    return "writable" if probe == folder else f"will be created (in {shown(probe)}, writable)"


def _bucket_reachable(path: ObjectPath) -> str:
    """An object-store folder: its bucket exists and answers (write access shows at upload)."""
    check_bucket(path, "output")
    return "object store (bucket reachable)"


def check_latest(latest: Path) -> str:
    """The ``latest`` pointer can be written: not a folder, not under a file, writable.

    Raises:
        ConfigError: ``latest`` is a folder, or one of its parents is a file.
        OutputError: its folder is not writable.
    """
    if is_remote(latest):
        return f"{shown(latest)}: {_bucket_reachable(latest)}"
    if latest.is_dir():
        raise ConfigError(
            f"[publish] latest: {latest} is a folder; expected the path of the one-line pointer "
            "file (remove the folder or set another path)"
        )
    probe = latest.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(
            f"[publish] latest: {latest} cannot be created: {probe} is a file, not a folder"
        )
    check_target(latest, "[publish] latest", ConfigError)  # a link, device or FIFO
    return f"{shown(latest)}: {_writable(latest.parent)}"


def _model(job: JobSpec, report: Report) -> dict[str, Any] | None:
    s, t = job.score, job.train
    if not s.model.exists() and t is not None and s.model == t.out:
        report(
            Check(
                name="model", detail=f"{shown(s.model)} does not exist yet; [train] will create it"
            )
        )
        return None
    meta = read_metadata(s.model)
    data = meta.get("data", {})
    report(
        Check(
            name="model",
            detail=f"{shown(s.model)}: preset {meta.get('preset')}, {data.get('users')} users, "
            f"{data.get('movies')} movies, trained {meta.get('created_at')}",
        )
    )
    return meta


def _train(job: JobSpec, meta: dict[str, Any] | None, report: Report) -> None:
    t = job.train
    if t is None:
        return
    report(_ratings_source(t))
    if t.test_ratings is not None:
        held = _ratings_source(dataclasses.replace(t, ratings=t.test_ratings))
        report(dataclasses.replace(held, name="test ratings"))
    if t.items is not None:
        report(Check(name="train items", detail=_items(t.items, t.item_col, t.title_col)))
    if not t.out.exists():
        plan = "will train: no bundle yet"
    elif t.retrain == "always":
        plan = 'will train: retrain = "always"'
    elif t.retrain == "if-missing":
        read_metadata(t.out)
        plan = "will not train: the bundle exists and retrain = if-missing"
    else:
        read_metadata(t.out)
        plan = "will train only if the ratings' fingerprint differs from the bundle's"
    report(Check(name="train", detail=f"preset {t.preset} into {shown(t.out)}: {plan}"))


def _score_options(job: JobSpec, meta: dict[str, Any] | None) -> ScoreSpec:
    """The job's score options with unset columns taken from the bundle, as a run takes them."""
    columns = meta.get("columns") if meta is not None else None
    return job.score.options.with_columns(columns if isinstance(columns, dict) else None)


def _pairs(job: JobSpec, meta: dict[str, Any] | None, report: Report) -> None:
    s = _score_options(job, meta)
    if s.is_cross_join:
        detail = "all: every movie for every user of the model"
        if s.users is not None:
            _peek(s.users, [s.user_column], "users")
            detail += f", limited to the users in {shown(s.users)}"
        report(Check(name="pairs", detail=detail))
        return
    from batchrank.scoring import discover, reader
    from batchrank.vocab import coerce_ids

    files = discover.discover_inputs(s.pairs)
    reader.validate_inputs(files, user_col=s.user_column, item_col=s.item_column)
    kinds = (
        {"user_id": meta["data"].get("user_id_kind"), "movie_id": meta["data"].get("movie_id_kind")}
        if meta is not None and isinstance(meta.get("data"), dict)
        else {}
    )
    for f in files:
        chunk = next(
            iter(
                reader.iter_chunks(
                    [f], user_col=s.user_column, item_col=s.item_column, chunk_rows=PEEK_ROWS
                )
            ),
            None,
        )
        if chunk is None:
            continue
        for col, source in (("user_id", s.user_column), ("movie_id", s.item_column)):
            kind = kinds.get(col)
            if kind not in ("int", "str"):
                continue
            where = f"{f.path}: column `{source}`"
            arr = chunk.table.column(col).combine_chunks()
            _, bad = coerce_ids(arr, kind, where=where)
            if len(arr) and bad.all():
                raise DataError(
                    f"{where}: none of the first {len(arr)} ids is a valid {kind} id for the "
                    f"model (first: {arr[0].as_py()!r})"
                )
    n_rows = sum(f.rows or 0 for f in files)
    rows = f", {n_rows:,} rows" if all(f.rows is not None for f in files) else ""
    report(
        Check(
            name="pairs",
            detail=f"{len(files)} file{'s' if len(files) != 1 else ''}{rows}; headers and first "
            "rows readable",
        )
    )


def _output(job: JobSpec) -> Path:
    s = job.score
    return s.out.render("<run_id>") if s.out.uses_run_id else job.output("")


def preflight(job: JobSpec) -> None:
    """What a run checks before any work, so it does not fail only after publishing.

    Raises:
        OutputError: the output folder cannot be created or written.
        ConfigError: ``latest`` is a folder or lies under a file.
    """
    _writable(_output(job).parent)
    if job.latest_path is not None:
        check_latest(job.latest_path)


def validate_job(job: JobSpec, report: Report) -> None:
    """Check everything a run of ``job`` needs, reporting each passed check.

    Raises:
        ModelError: the bundle is missing, incomplete or not a batchrank bundle.
        DataError: an input cannot be read, lacks a column or has ids the model cannot use.
        OutputError: an output folder cannot be created or written.
        ConfigError: ``latest`` is a folder or lies under a file.
    """
    report(Check(name="job file", detail=f"{job.source}: job `{job.name}` for {job.date}"))
    for text in job.overrides:
        report(Check(name="override", detail=text))
    meta = _model(job, report)
    _train(job, meta, report)
    _pairs(job, meta, report)
    s = _score_options(job, meta)
    if s.items is not None:
        report(Check(name="items", detail=_items(s.items, s.item_column, s.title_column)))
    out = _output(job)
    detail = f"{shown(out.parent)}: {_writable(out.parent)}"
    if s.max_rows_per_file is not None:
        from batchrank.scoring.parts import check_part_folder, part_path

        if not job.score.out.uses_run_id:
            check_part_folder(out, "[score] out")
        detail += (
            f"; {out.name} is a folder of part files ({part_path(out).name}, ...) of at most "
            f"{s.max_rows_per_file:,} rows each, users never split"
        )
    report(Check(name="output", detail=detail))
    rejects = job.rejects("<run_id>")
    if rejects is not None:
        report(
            Check(name="rejects", detail=f"{shown(rejects.parent)}: {_writable(rejects.parent)}")
        )
    if job.train is not None:
        report(
            Check(
                name="bundle",
                detail=f"{shown(job.train.out.parent)}: {_writable(job.train.out.parent)}",
            )
        )
    if job.latest_path is not None:
        report(Check(name="latest", detail=check_latest(job.latest_path)))
    holder = lock_holder(job.lock_path)
    if holder is None:
        where = _writable(job.lock_path.parent)
        report(Check(name="lock", detail=f"{shown(job.lock_path)}: free; folder {where}"))
    else:
        who = ", ".join(
            f"{k} {v}" for k, v in holder.items() if k in ("pid", "run_id", "since") and v
        )
        report(
            Check(
                name="lock",
                detail=f"{shown(job.lock_path)}: held by a running job ({who or 'unknown'})",
            )
        )
