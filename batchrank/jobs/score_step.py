"""A job's ``[score]`` and ``[table]`` sections: its :class:`~batchrank.jobs.jobspec.ScoreStep`.

The ``[score]`` keys are :class:`~batchrank.scoring.spec.ScoreSpec`'s own options, validated by
the spec itself; input paths are rendered for the run date and checked to exist, ``out`` and
``rejects`` stay templates (``{run_id}`` is known only when the run starts). ``[table]`` holds a
lake table output's options (``mode`` is ``table_mode``) and applies to ``format = "delta"`` or
``"iceberg"`` only.
"""

from __future__ import annotations

import datetime as dt
import glob
from typing import Any

from batchrank.errors import ConfigError
from batchrank.formats import GLOB_CHARS, TABLE_FORMATS
from batchrank.fs import is_remote
from batchrank.jobs.jobfile import INPUT_PLACEHOLDERS, JobFile
from batchrank.jobs.jobspec import ScoreStep, TrainStep
from batchrank.jobs.paths import PathTemplate
from batchrank.jobs.sections import Value
from batchrank.options import Option, OptionError
from batchrank.scoring.spec import SCORE_OPTIONS, ScoreSpec

__all__ = ["path_list", "score_step"]


_SCORE_PATHS = (
    "model",
    "pairs",
    "out",
    "rejects",
    "items",
    "users",
    "exclude",
    "deny_items",
    "allow_items",
)
"""``[score]`` keys read as paths relative to the job file (templated, checked to exist)."""
_OUTPUT_PLACEHOLDERS = ("date", "job", "run_id")
_TABLE_OPTIONS: dict[str, Option] = {o.name: o for o in SCORE_OPTIONS if o.scope == "table"}
"""Options of the ``[table]`` section (``table_mode`` is its key ``mode``)."""


def path_list(
    j: JobFile, date: dt.date, name: str, key: str = "pairs", section: str = "score"
) -> tuple[str, ...]:
    """A list of input paths or globs (``pairs``, where ``"all"`` is allowed, or ``exclude``)."""
    v = j.get(section, key) if key != "pairs" else j.require(section, key)
    if v is None:
        return ()
    values = [v.value] if isinstance(v.value, str) else v.value
    if (
        not isinstance(values, list)
        or not values
        or not all(isinstance(p, str) and p.strip() for p in values)
    ):
        all_ = '"all", ' if key == "pairs" else ""
        j.bad(section, key, v, f"{all_}a path, or a list of paths or globs")
    if key == "pairs" and "all" in values:
        return tuple(values)  # ScoreSpec refuses "all" among other pairs
    out = []
    for text in values:
        one = Value(text, v.origin, v.base)
        path = j.rendered(section, key, one, date, name, INPUT_PLACEHOLDERS)
        if is_remote(path):
            pass  # checked when the run discovers its inputs (exit 3 naming the URI)
        elif GLOB_CHARS & set(text):
            if not glob.glob(str(path), recursive=True):
                raise ConfigError(f"{j.where(section, key, v)}: pattern matches nothing: {path}")
        elif not path.exists():
            raise ConfigError(f"{j.where(section, key, v)}: {key} input not found: {path}")
        out.append(str(path))
    return tuple(out)


def score_step(j: JobFile, date: dt.date, name: str, train: TrainStep | None) -> ScoreStep:
    if not j.has("score"):
        j.error("missing section [score]")
    mv = j.get("score", "model")
    if mv is None:
        if train is None:
            j.error("[score] missing required key `model` (or add a [train] step that writes it)")
        model = train.out
    else:
        model = j.rendered("score", "model", mv, date, name, INPUT_PLACEHOLDERS)
        if train is None or model != train.out:
            if not is_remote(model) and not model.exists():
                raise ConfigError(
                    f"{j.where('score', 'model', mv)}: model bundle not found: {model}"
                )
            if train is not None:
                j.warnings.append(
                    f"{j.file}: [score] model {model} is not the bundle [train] writes "
                    f"({train.out}); the trained bundle will not be used for scoring"
                )
    ov = j.require("score", "out")
    out = PathTemplate(
        template=j.template("score", "out", ov, _OUTPUT_PLACEHOLDERS), date=date, job=name
    )
    rv = j.get("score", "rejects")
    rejects = (
        PathTemplate(
            template=j.template("score", "rejects", rv, _OUTPUT_PLACEHOLDERS), date=date, job=name
        )
        if rv is not None
        else None
    )
    values: dict[str, Any] = {
        "model": model,
        "pairs": path_list(j, date, name),
        "items": j.input_path("score", "items", date, name, what="items file"),
        "users": j.input_path("score", "users", date, name, what="users file"),
        "exclude": path_list(j, date, name, "exclude"),
        "deny_items": j.input_path("score", "deny_items", date, name, what="deny-items file"),
        "allow_items": j.input_path("score", "allow_items", date, name, what="allow-items file"),
    }
    for opt in SCORE_OPTIONS:
        v = j.get("score", opt.name)
        if v is not None and opt.name not in _SCORE_PATHS and opt.scope != "table":
            values[opt.name] = j.option("score", opt, v)
    _table_values(j, values, date)
    probe = "<run_id>"
    try:
        options = ScoreSpec(
            **values,
            out=out.render(probe),
            rejects=rejects.render(probe) if rejects is not None else None,
        )
    except OptionError as e:
        if e.key not in _TABLE_OPTIONS:
            raise j.named("score", e) from None
        raise _table_named(j, e) from None
    return ScoreStep(options=options, out=out, rejects=rejects)


def _table_named(j: JobFile, e: OptionError) -> ConfigError:
    """A ``[table]`` option's error, named by its key there (``[table] mode``)."""
    key = _TABLE_OPTIONS[e.key].job_key
    where = j.where("table", key, j.get("table", key))
    return ConfigError(e.named(lambda k: where if k == e.key else k))


def _table_values(j: JobFile, values: dict[str, Any], date: dt.date) -> None:
    """A table output's ``[table]`` options, and the run date as its partition value."""
    if values.get("format") not in TABLE_FORMATS:
        if j.has("table"):
            j.error('[table] applies to [score] format = "delta" or "iceberg"')
        return
    values["date"] = date
    for opt in _TABLE_OPTIONS.values():
        v = j.get("table", opt.job_key)
        if v is not None:
            try:
                values[opt.name] = opt.coerce(v.value)
            except OptionError as e:
                raise _table_named(j, e) from None
