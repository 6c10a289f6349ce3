"""Reading and validating job files, with ``--set`` and environment overrides.

Precedence, highest first: ``--set SECTION.KEY=VALUE`` on the command line, then environment
variables ``BATCHRANK_<SECTION>_<KEY>`` (for instance ``BATCHRANK_SCORE_TOP_K=20``; ignored for a
``[train]`` step the file does not have), then the job file, then the defaults. An override's
value is read as a TOML value when it is one (``20``, ``true``, ``[1, 5]``, ``"text"``) and as
plain text otherwise (``jsonl``, ``../x.csv``).

Relative paths in the job file resolve against the job file's folder; relative paths given by an
override resolve against the current folder, where the command was typed.

Every problem is a :class:`~batchrank.errors.ConfigError` raised before any work, whose message
names the file, the section and the key, says what was expected and shows the value received.
"""

from __future__ import annotations

import datetime as dt
import difflib
import glob
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, get_args

from batchrank.errors import ConfigError
from batchrank.formats import GLOB_CHARS
from batchrank.jobs.paths import PathTemplate, TemplateError, placeholders_of, render
from batchrank.jobs.spec import (
    JobInfo,
    JobSpec,
    PresetName,
    PublishStep,
    Retrain,
    ScoreStep,
    TrainStep,
)
from batchrank.options import Option, OptionError, shown_value
from batchrank.scoring.spec import SCORE_OPTIONS, ScoreSpec
from batchrank.uris import refuse_uri

__all__ = ["ENV_PREFIX", "KEYS", "load_job", "parse_date", "parse_override"]

ENV_PREFIX = "BATCHRANK_"
"""Prefix of environment overrides: ``BATCHRANK_SCORE_TOP_K=20``."""

KEYS: dict[str, tuple[str, ...]] = {
    "job": ("name", "description", "lock_dir", "preview_users"),
    "train": (
        "ratings",
        "items",
        "preset",
        "out",
        "retrain",
        "epochs",
        "rating_scale",
        "user_col",
        "item_col",
        "rating_col",
        "title_col",
        "seed",
        "test_fraction",
    ),
    "score": tuple(opt.name for opt in SCORE_OPTIONS if opt.scope == "all"),
    "publish": ("success_marker", "latest"),
}
"""Every section of a job file and the keys it accepts."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SCORE_PATHS = ("model", "pairs", "out", "rejects", "items", "users")
"""``[score]`` keys read as paths relative to the job file (templated, checked to exist)."""
_INPUT_PLACEHOLDERS = ("date", "job")
_OUTPUT_PLACEHOLDERS = ("date", "job", "run_id")


@dataclass(frozen=True)
class _Value:
    """A value with where it came from."""

    value: Any
    origin: str | None
    """None for the job file, else the override that set it (``--set score.top_k=20``)."""
    base: Path
    """Folder that relative paths resolve against."""


def _hint(word: str, choices: Sequence[str], fmt: str = "`{}`") -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {fmt.format(close[0])}?)" if close else ""


def _quote(choices: Sequence[str]) -> str:
    items = [f'"{c}"' for c in choices]
    return ", ".join(items[:-1]) + f" or {items[-1]}" if len(items) > 1 else items[0]


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


def _override_value(text: str) -> Any:
    """A TOML value when the text is one, else the text itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    except RecursionError:
        raise ConfigError(f"override value nested too deeply: {text[:40]!r}...") from None


def parse_override(text: str) -> tuple[str, str, Any]:
    """Split ``SECTION.KEY=VALUE`` into its section, key and parsed value.

    Raises:
        ConfigError: the text is not of that shape.
    """
    head, eq, value = text.partition("=")
    section, dot, key = head.strip().partition(".")
    if not eq or not dot or not section or not key or "." in key:
        raise ConfigError(
            f"--set expects SECTION.KEY=VALUE such as score.top_k=20; received {text!r}"
        )
    return section.strip(), key.strip(), _override_value(value.strip())


class _Job:
    """Reads one job file's sections, remembering where each value came from."""

    def __init__(self, source: Path, tables: dict[str, dict[str, _Value]]) -> None:
        self.file = str(source)
        self.tables = tables
        self.warnings: list[str] = []

    # -- messages ------------------------------------------------------------------------------

    def where(self, section: str, key: str, v: _Value | None = None) -> str:
        origin = f" (set by {v.origin})" if v is not None and v.origin else ""
        return f"{self.file}: [{section}] {key}{origin}"

    def bad(self, section: str, key: str, v: _Value, expected: str) -> NoReturn:
        raise ConfigError(
            f"{self.where(section, key, v)} must be {expected}; received {shown_value(v.value)}"
        )

    def named(self, section: str, e: OptionError) -> ConfigError:
        """A spec's option error, its key named by file, section and the override that set it."""
        v = self.get(section, e.key)
        return ConfigError(e.named(lambda k: self.where(section, k, v) if k == e.key else k))

    def option(self, section: str, opt: Option, v: _Value) -> Any:
        """A value validated by its option's own check."""
        try:
            return opt.coerce(v.value)
        except OptionError as e:
            raise self.named(section, e) from None

    def error(self, text: str) -> NoReturn:
        raise ConfigError(f"{self.file}: {text}")

    # -- access -----------------------------------------------------------------------------

    def has(self, section: str) -> bool:
        return section in self.tables

    def get(self, section: str, key: str) -> _Value | None:
        return self.tables.get(section, {}).get(key)

    def require(self, section: str, key: str) -> _Value:
        if not self.has(section):
            self.error(f"missing section [{section}]")
        v = self.get(section, key)
        if v is None:
            self.error(f"[{section}] missing required key `{key}`")
        return v

    # -- typed values -----------------------------------------------------------------------

    def string(self, section: str, key: str, default: str) -> str:
        v = self.get(section, key)
        if v is None:
            return default
        if not isinstance(v.value, str) or not v.value.strip():
            self.bad(section, key, v, "a non-empty string")
        return v.value

    def optional_string(self, section: str, key: str) -> str | None:
        v = self.get(section, key)
        return None if v is None else self.string(section, key, "")

    def integer(self, section: str, key: str, default: int, minimum: int | None = None) -> int:
        v = self.get(section, key)
        if v is None:
            return default
        return self._int(section, key, v, minimum)

    def optional_integer(self, section: str, key: str, minimum: int | None = None) -> int | None:
        v = self.get(section, key)
        return None if v is None else self._int(section, key, v, minimum)

    def _int(self, section: str, key: str, v: _Value, minimum: int | None) -> int:
        x = v.value
        ok = isinstance(x, int) and not isinstance(x, bool)
        if not ok or (minimum is not None and x < minimum):
            self.bad(
                section, key, v, "an integer" + (f" >= {minimum}" if minimum is not None else "")
            )
        return int(x)

    def number(
        self,
        section: str,
        key: str,
        default: float,
        *,
        low: float,
        high: float | None = None,
        high_open: bool = False,
    ) -> float:
        v = self.get(section, key)
        return default if v is None else self._number(section, key, v, low, high, high_open)

    def optional_number(
        self,
        section: str,
        key: str,
        *,
        low: float,
        high: float | None = None,
        high_open: bool = False,
    ) -> float | None:
        v = self.get(section, key)
        return None if v is None else self._number(section, key, v, low, high, high_open)

    def _number(
        self, section: str, key: str, v: _Value, low: float, high: float | None, high_open: bool
    ) -> float:
        x = v.value
        ok = isinstance(x, int | float) and not isinstance(x, bool) and x >= low
        if ok and high is not None:
            ok = x < high if high_open else x <= high
        if not ok:
            if high is None:
                expected = f"a number >= {low:g}"
            else:
                expected = f"a number in [{low:g}, {high:g}{')' if high_open else ']'}"
            self.bad(section, key, v, expected)
        return float(x)

    def boolean(self, section: str, key: str, default: bool) -> bool:
        v = self.get(section, key)
        if v is None:
            return default
        if not isinstance(v.value, bool):
            self.bad(section, key, v, "true or false")
        return bool(v.value)

    def choice(self, section: str, key: str, choices: Sequence[str], default: str | None) -> Any:
        v = self.get(section, key)
        if v is None:
            return default
        if v.value not in choices:
            hint = _hint(v.value, choices, '"{}"') if isinstance(v.value, str) else ""
            self.bad(section, key, v, f"one of {_quote(choices)}{hint}")
        return v.value

    # -- paths ------------------------------------------------------------------------------

    def template(self, section: str, key: str, v: _Value, allowed: Sequence[str]) -> str:
        """The absolute template of a path value, its placeholders checked."""
        if not isinstance(v.value, str) or not v.value.strip():
            self.bad(section, key, v, "a path (a non-empty string)")
        try:
            text = refuse_uri(v.value, f"[{section}] {key}")
        except ConfigError as e:
            raise ConfigError(f"{self.file}: {e}") from None
        try:
            names = placeholders_of(text)
        except TemplateError as e:
            raise ConfigError(f"{self.where(section, key, v)}: {e}; received {text!r}") from None
        except ValueError as e:
            raise ConfigError(
                f"{self.where(section, key, v)} has malformed braces ({e}); received {text!r}"
            ) from None
        for name in names:
            if name not in allowed:
                expected = ", ".join(f"{{{a}}}" for a in allowed)
                raise ConfigError(
                    f"{self.where(section, key, v)} uses unknown placeholder {{{name}}}"
                    f"{_hint(name, allowed, '{{{}}}')}; this key allows {expected}"
                )
        return str(v.base / os.path.expanduser(text))

    def rendered(
        self, section: str, key: str, v: _Value, date: dt.date, job: str, allowed: Sequence[str]
    ) -> Path:
        """A path rendered for the run date (no ``{run_id}``)."""
        return Path(render(self.template(section, key, v, allowed), date=date, job=job)).resolve()

    def input_path(
        self, section: str, key: str, date: dt.date, job: str, *, what: str
    ) -> Path | None:
        """An existing input path, or None when the key is absent."""
        v = self.get(section, key)
        if v is None:
            return None
        path = self.rendered(section, key, v, date, job, _INPUT_PLACEHOLDERS)
        if not path.exists():
            raise ConfigError(f"{self.where(section, key, v)}: {what} not found: {path}")
        return path


def _read_toml(source: Path) -> dict[str, Any]:
    if not source.exists():
        raise ConfigError(f"{source}: job file not found")
    if source.is_dir():
        raise ConfigError(f"{source}: is a folder; expected a job file (.toml)")
    try:
        text = source.read_text(encoding="utf-8-sig")  # a byte-order mark is fine
    except UnicodeDecodeError as e:
        raise ConfigError(f"{source}: job file is not UTF-8 text ({e.reason})") from None
    except OSError as e:
        raise ConfigError(f"{source}: cannot read job file ({e.strerror})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None
    except RecursionError:
        raise ConfigError(f"{source}: not valid TOML: arrays or tables nested too deeply") from None


def _collect(
    source: Path,
    doc: Mapping[str, Any],
    overrides: Sequence[str],
    environ: Mapping[str, str],
) -> tuple[dict[str, dict[str, _Value]], list[str]]:
    """Merge the file, the environment and ``--set`` into sections of values."""
    file = str(source)
    base = source.resolve().parent
    tables: dict[str, dict[str, _Value]] = {}
    for name, table in doc.items():
        if name not in KEYS:
            if isinstance(table, dict):
                raise ConfigError(
                    f"{file}: unknown section [{name}]{_hint(name, list(KEYS), '[{}]')}; "
                    "expected [job], [train], [score] or [publish]"
                )
            raise ConfigError(
                f"{file}: unknown top-level key `{name}`; keys belong in a section "
                "([job], [train], [score] or [publish])"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{file}: [{name}] must be a table (a section); received {table!r}")
        tables[name] = {k: _Value(v, None, base) for k, v in table.items()}
    applied: list[str] = []
    cwd = Path.cwd()
    env_items = sorted((k, v) for k, v in environ.items() if k.startswith(ENV_PREFIX))
    for var, text in env_items:
        section, _, key = var[len(ENV_PREFIX) :].partition("_")
        section = section.lower()
        if section not in KEYS or not key:
            continue  # BATCHRANK_* variables of other purposes
        if section == "train" and "train" not in tables:
            continue  # the environment tunes a [train] step; it does not add one
        origin = f"{var}={text}"
        tables.setdefault(section, {})[key.lower()] = _Value(_override_value(text), origin, cwd)
        applied.append(origin)
    for text in overrides:
        section, key, value = parse_override(text)
        if section not in KEYS:
            raise ConfigError(
                f"{file}: --set {text}: unknown section `{section}`"
                f"{_hint(section, list(KEYS))}; expected job, train, score or publish"
            )
        origin = f"--set {text}"
        tables.setdefault(section, {})[key] = _Value(value, origin, cwd)
        applied.append(origin)
    for section, values in tables.items():
        for key, v in values.items():
            if key not in KEYS[section]:
                origin = f" (set by {v.origin})" if v.origin else ""
                raise ConfigError(
                    f"{file}: [{section}] unknown key `{key}`{origin}{_hint(key, KEYS[section])}"
                )
    return tables, applied


def _job_info(j: _Job) -> JobInfo:
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


def _train_step(j: _Job, date: dt.date, name: str) -> TrainStep | None:
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
    out = j.rendered("train", "out", j.require("train", "out"), date, name, _INPUT_PLACEHOLDERS)
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
    )


def _pairs(j: _Job, date: dt.date, name: str) -> tuple[str, ...]:
    v = j.require("score", "pairs")
    values = [v.value] if isinstance(v.value, str) else v.value
    if (
        not isinstance(values, list)
        or not values
        or not all(isinstance(p, str) and p.strip() for p in values)
    ):
        j.bad("score", "pairs", v, '"all", a path, or a list of paths or globs')
    if "all" in values:
        return tuple(values)  # ScoreSpec refuses "all" among other pairs
    out = []
    for text in values:
        one = _Value(text, v.origin, v.base)
        path = j.rendered("score", "pairs", one, date, name, _INPUT_PLACEHOLDERS)
        if GLOB_CHARS & set(text):
            if not glob.glob(str(path), recursive=True):
                raise ConfigError(
                    f"{j.where('score', 'pairs', v)}: pattern matches nothing: {path}"
                )
        elif not path.exists():
            raise ConfigError(f"{j.where('score', 'pairs', v)}: pairs input not found: {path}")
        out.append(str(path))
    return tuple(out)


def _score_step(j: _Job, date: dt.date, name: str, train: TrainStep | None) -> ScoreStep:
    if not j.has("score"):
        j.error("missing section [score]")
    mv = j.get("score", "model")
    if mv is None:
        if train is None:
            j.error("[score] missing required key `model` (or add a [train] step that writes it)")
        model = train.out
    else:
        model = j.rendered("score", "model", mv, date, name, _INPUT_PLACEHOLDERS)
        if train is None or model != train.out:
            if not model.exists():
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
        "pairs": _pairs(j, date, name),
        "items": j.input_path("score", "items", date, name, what="items file"),
        "users": j.input_path("score", "users", date, name, what="users file"),
    }
    for opt in SCORE_OPTIONS:
        v = j.get("score", opt.name)
        if v is not None and opt.name not in _SCORE_PATHS:
            values[opt.name] = j.option("score", opt, v)
    probe = "<run_id>"
    try:
        options = ScoreSpec(
            **values,
            out=out.render(probe),
            rejects=rejects.render(probe) if rejects is not None else None,
        )
    except OptionError as e:
        raise j.named("score", e) from None
    return ScoreStep(options=options, out=out, rejects=rejects)


def _publish_step(j: _Job, name: str, score: ScoreStep) -> PublishStep:
    latest: Path | None = score.out.static_root / "latest"
    v = j.get("publish", "latest")
    if v is not None:
        if isinstance(v.value, bool):
            latest = latest if v.value else None
        else:
            text = j.template("publish", "latest", v, ("job",))
            latest = Path(render(text, date=dt.date.min, job=name)).resolve()
    return PublishStep(
        success_marker=j.boolean("publish", "success_marker", True),
        latest=latest,
    )


def _check_conflicts(j: _Job, spec: JobSpec) -> None:
    """What a job adds to the spec's own checks: its output is not one of its inputs."""
    s = spec.score
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
    doc = _read_toml(path)
    tables, applied = _collect(path, doc, overrides, os.environ if environ is None else environ)
    j = _Job(path, tables)
    info = _job_info(j)
    run_date = date or dt.date.today()
    train = _train_step(j, run_date, info.name)
    score = _score_step(j, run_date, info.name, train)
    publish = _publish_step(j, info.name, score)
    spec = JobSpec(
        source=path,
        date=run_date,
        job=info,
        train=train,
        score=score,
        publish=publish,
        overrides=tuple(applied),
        warnings=tuple(j.warnings),
    )
    _check_conflicts(j, spec)
    return spec
