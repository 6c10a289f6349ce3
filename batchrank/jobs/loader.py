"""Building a job's typed spec from its file: sections, paths relative to the file, checks.

Relative paths in the job file resolve against the job file's folder; relative paths given by an
override resolve against the current folder, where the command was typed. The ``[score]`` and
``[table]`` sections are read by :mod:`batchrank.jobs.score_step`.

Every problem is a :class:`~batchrank.errors.ConfigError` raised before any work, whose message
names the file, the section and the key, says what was expected and shows the value received.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import get_args

from batchrank.errors import ConfigError
from batchrank.fs import StorageOptions, configure
from batchrank.jobs.jobfile import INPUT_PLACEHOLDERS, JobFile
from batchrank.jobs.jobspec import (
    GateStep,
    JobInfo,
    JobSpec,
    PresetName,
    PublishStep,
    Retrain,
    ScoreStep,
    TrainStep,
)
from batchrank.jobs.paths import render
from batchrank.jobs.score_step import path_list, score_step
from batchrank.jobs.sections import ENV_PREFIX, KEYS, collect, parse_override, read_toml
from batchrank.sinks.redis.target import OPTION_KEYS as REDIS_KEYS
from batchrank.sinks.redis.target import RedisTarget, target_of
from batchrank.uris import to_path

__all__ = ["ENV_PREFIX", "KEYS", "load_job", "parse_date", "parse_override"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_RAY_ONLY = ("ray_address", "concurrency", "gpus_per_worker")


def parse_date(text: str) -> dt.date:
    """Parse ``YYYY-MM-DD``.

    Raises:
        ConfigError: naming the value received.
    """
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            raise ValueError
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--date must be a date YYYY-MM-DD; received {text!r}") from None


def _job_info(j: JobFile) -> JobInfo:
    v = j.require("job", "name")
    if not isinstance(v.value, str) or not _NAME.fullmatch(v.value):
        j.bad(
            "job",
            "name",
            v,
            "a name of letters, digits, '.', '_' and '-' (it names lock and work files)",
        )
    name: str = v.value
    lock = j.get("job", "lock_dir")
    lock_dir = None
    if lock is not None:
        lock_dir = Path(
            render(j.template("job", "lock_dir", lock, ("job",)), date=dt.date.min, job=name)
        )
        lock_dir = lock_dir.resolve()
    return JobInfo(
        name=name,
        description=j.string("job", "description", ""),
        lock_dir=lock_dir,
        preview_users=j.integer("job", "preview_users", 0, minimum=0),
    )


def _storage(j: JobFile) -> StorageOptions:
    """The ``[storage]`` section: settings of object-store paths beyond the SDKs' own chains."""
    endpoint = j.optional_string("storage", "endpoint")
    if endpoint is not None and "://" not in endpoint:
        v = j.get("storage", "endpoint")
        assert v is not None
        j.bad("storage", "endpoint", v, "a URL such as http://127.0.0.1:9000")
    lock_dir = j.optional_string("storage", "lock_dir")
    lv = j.get("storage", "lock_dir")
    if lv is not None and lock_dir is not None:
        lock_dir = str(lv.base / os.path.expanduser(lock_dir))  # relative to the job file
    return StorageOptions(
        region=j.optional_string("storage", "region"),
        endpoint=endpoint,
        anonymous=j.boolean("storage", "anonymous", False),
        lock_dir=lock_dir,
    )


def _train_step(j: JobFile, date: dt.date, name: str) -> TrainStep | None:
    if not j.has("train"):
        return None
    rv = j.require("train", "ratings")
    if isinstance(rv.value, str) and rv.value.startswith("tfds:"):
        if len(rv.value) == len("tfds:"):
            j.bad("train", "ratings", rv, "a path or tfds:NAME such as tfds:movielens/100k-ratings")
        ratings = rv.value
    else:
        path = j.input_path("train", "ratings", date, name, what="ratings source")
        assert path is not None
        ratings = str(path)
    out = j.rendered("train", "out", j.require("train", "out"), date, name, INPUT_PLACEHOLDERS)
    scale = None
    sv = j.get("train", "rating_scale")
    if sv is not None:
        x = sv.value
        ok = (
            isinstance(x, list)
            and len(x) == 2
            and all(isinstance(n, int | float) and not isinstance(n, bool) for n in x)
            and x[0] < x[1]
        )
        if not ok:
            j.bad("train", "rating_scale", sv, "[min, max] with min < max, such as [1, 5]")
        scale = (float(x[0]), float(x[1]))
    return TrainStep(
        ratings=ratings,
        out=out,
        items=j.input_path("train", "items", date, name, what="items file"),
        preset=j.choice("train", "preset", get_args(PresetName), "default"),
        retrain=j.choice("train", "retrain", get_args(Retrain), "if-missing"),
        epochs=j.optional_integer("train", "epochs", minimum=1),
        rating_scale=scale,
        user_col=j.string("train", "user_col", "user_id"),
        item_col=j.string("train", "item_col", "movie_id"),
        rating_col=j.string("train", "rating_col", "rating"),
        title_col=j.string("train", "title_col", "title"),
        seed=j.optional_integer("train", "seed"),
        test_fraction=j.optional_number(
            "train", "test_fraction", low=0.0, high=1.0, high_open=True
        ),
        test_ratings=_test_ratings(j, date, name),
    )


def _test_ratings(j: JobFile, date: dt.date, name: str) -> str | None:
    """``[train] test_ratings``: a separate held-out file (tfds:NAME kept as text)."""
    v = j.get("train", "test_ratings")
    if v is not None and isinstance(v.value, str) and v.value.startswith("tfds:"):
        return v.value
    path = j.input_path("train", "test_ratings", date, name, what="test ratings source")
    return None if path is None else str(path)


def _gate_step(j: JobFile, date: dt.date, name: str, score: ScoreStep) -> GateStep | None:
    if not j.has("gate"):
        return None
    j.require("gate", "ratings")
    ratings = j.input_path("gate", "ratings", date, name, what="held-out ratings")
    assert ratings is not None
    exclude = path_list(j, date, name, "exclude", "gate") or score.exclude
    gate = GateStep(
        ratings=ratings,
        exclude=exclude,
        k=j.integer("gate", "k", score.top_k, minimum=1),
        relevance=j.optional_number("gate", "relevance", low=-1e9),
        min_ndcg=j.optional_number("gate", "min_ndcg", low=0, high=1),
        min_recall=j.optional_number("gate", "min_recall", low=0, high=1),
        max_rmse=j.optional_number("gate", "max_rmse", low=0),
        max_drop=j.optional_number("gate", "max_drop", low=0, high=1),
    )
    if gate.needs_ranking and not gate.exclude:
        j.error(
            "[gate] ranking checks need the training interactions: set [gate] exclude "
            "or [score] exclude"
        )
    if not gate.needs_ranking and gate.max_rmse is None:
        j.error("[gate] checks nothing: set min_ndcg, min_recall, max_drop or max_rmse")
    return gate


def _publish_step(j: JobFile, name: str, score: ScoreStep) -> PublishStep:
    if score.options.is_table:
        # The table's commit is the certificate, and the table is the latest export.
        for key in ("success_marker", "latest"):
            v = j.get("publish", key)
            if v is not None and v.value is not False:
                j.bad("publish", key, v, "false or absent with a table output (its commit "
                      "is the certificate)")  # fmt: skip
        return PublishStep(success_marker=False, latest=None)
    latest: Path | None = score.out.static_root / "latest"
    v = j.get("publish", "latest")
    if v is not None:
        if isinstance(v.value, bool):
            latest = latest if v.value else None
        else:
            text = j.template("publish", "latest", v, ("job",))
            latest = to_path(render(text, date=dt.date.min, job=name))
    return PublishStep(
        success_marker=j.boolean("publish", "success_marker", True),
        latest=latest,
        redis=_redis_target(j, name),
    )


def _redis_target(j: JobFile, name: str) -> RedisTarget | None:
    """The ``[publish.redis]`` section: ``url`` and the options of :class:`RedisTarget`."""
    if not j.has("publish.redis"):
        return None
    url = j.require("publish.redis", "url")
    options = {k: v.value for k in REDIS_KEYS if (v := j.get("publish.redis", k)) is not None}
    where = f"{j.file}: [publish.redis]"
    target = target_of(url.value, options, where=where, url_key="url")
    return replace(target, prefix=target.key_prefix(name))


def _check_conflicts(j: JobFile, spec: JobSpec) -> None:
    """What a job adds to the spec's own checks: no stray Ray keys; the output is no input.

    Ray keys with the local engine are refused here only: the Python API and the CLI accept one
    set of options for either engine (the Ray tests run both with the same options).
    """
    s = spec.score
    if s.engine != "ray":
        ray_only = [k for k in _RAY_ONLY if j.get("score", k) is not None]
        if ray_only:
            v = j.get("score", ray_only[0])
            raise ConfigError(
                f'{j.where("score", ray_only[0], v)} needs engine = "ray"; engine is {s.engine!r}'
            )
    if s.out.uses_run_id:
        return
    out = s.out.render("")
    where = j.where("score", "out", j.get("score", "out"))
    if not s.is_cross_join and str(out) in s.pairs:
        raise ConfigError(f"{where} is also an input in [score] pairs")
    if spec.train is not None and out == spec.train.out:
        raise ConfigError(f"{where} is the bundle folder [train] writes; give them different paths")


def load_job(
    source: str | Path,
    *,
    overrides: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    date: dt.date | None = None,
) -> JobSpec:
    """Read, merge and validate a job file for one run date.

    Args:
        source: the job file (``jobs/*.toml``).
        overrides: ``SECTION.KEY=VALUE`` texts, as given to ``--set``.
        environ: environment to take ``BATCHRANK_<SECTION>_<KEY>`` overrides from (default:
            ``os.environ``; pass ``{}`` to ignore the environment).
        date: the run date (default: today, local time).

    Returns:
        The validated job: absolute paths, inputs checked to exist, templates checked.

    Raises:
        ConfigError: unknown sections or keys, wrong types, missing required keys, missing
            input paths, unknown placeholders or conflicting options; the message names the
            file and the key.
    """
    path = Path(source)
    doc = read_toml(path)
    tables, applied = collect(path, doc, overrides, os.environ if environ is None else environ)
    j = JobFile(path, tables)
    storage = _storage(j)
    configure(storage)  # before any path of the job is looked at
    info = _job_info(j)
    run_date = date or dt.date.today()
    train = _train_step(j, run_date, info.name)
    score = score_step(j, run_date, info.name, train)
    publish = _publish_step(j, info.name, score)
    gate = _gate_step(j, run_date, info.name, score)
    spec = JobSpec(
        source=path,
        date=run_date,
        job=info,
        train=train,
        score=score,
        publish=publish,
        gate=gate,
        overrides=tuple(applied),
        warnings=tuple(j.warnings),
        storage=storage,
    )
    _check_conflicts(j, spec)
    return spec
