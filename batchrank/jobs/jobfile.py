"""A job file's raw values: the TOML, the environment and ``--set``, merged, each with its origin.

Precedence, highest first: ``--set SECTION.KEY=VALUE`` on the command line, then environment
variables ``BATCHRANK_<SECTION>_<KEY>`` (for instance ``BATCHRANK_SCORE_TOP_K=20``; ignored for a
``[train]`` step the file does not have, and for options only ``batchrank score`` takes, such as
``BATCHRANK_SCORE_WORK_DIR``), then the job file, then the defaults. An override's
value is read as a TOML value when it is one (``20``, ``true``, ``[1, 5]``, ``"text"``) and as
plain text otherwise (``jsonl``, ``../x.csv``).

:class:`JobFile` reads the merged values typed, and words every problem as a
:class:`~batchrank.errors.ConfigError` naming the file, the section, the key and the override
that set it. :mod:`batchrank.jobs.loader` builds the job's spec from it.
"""

from __future__ import annotations

import datetime as dt
import difflib
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from batchrank.errors import ConfigError
from batchrank.fs import is_remote, redact
from batchrank.jobs.paths import TemplateError, placeholders_of, render
from batchrank.options import ENV_PREFIX, Option, OptionError, shown_value
from batchrank.scoring.spec import SCORE_OPTIONS
from batchrank.sinks.redis.target import OPTION_KEYS as REDIS_KEYS
from batchrank.uris import path_text, to_path, uri_scheme

__all__ = [
    "ENV_PREFIX",
    "INPUT_PLACEHOLDERS",
    "KEYS",
    "JobFile",
    "Value",
    "collect",
    "parse_override",
    "read_toml",
]

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
        "test_ratings",
    ),
    "score": tuple(opt.name for opt in SCORE_OPTIONS if opt.scope == "all"),
    "publish": ("success_marker", "latest"),
    "gate": (
        "ratings",
        "exclude",
        "k",
        "relevance",
        "min_ndcg",
        "min_recall",
        "max_rmse",
        "max_drop",
    ),
    "publish.redis": ("url", *REDIS_KEYS),
    "table": tuple(opt.job_key for opt in SCORE_OPTIONS if opt.scope == "table"),
    "storage": ("region", "endpoint", "anonymous", "lock_dir"),
}
"""Every section of a job file and the keys it accepts."""

_COMMAND_LINE_ONLY = frozenset(opt.name for opt in SCORE_OPTIONS if opt.scope == "cli")

INPUT_PLACEHOLDERS = ("date", "job")
"""Placeholders an input path may use."""


@dataclass(frozen=True)
class Value:
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
    sub, subdot, rest = key.partition(".")
    if subdot and f"{section}.{sub}" in KEYS and rest:  # publish.redis.url: [publish.redis] url
        section, key = f"{section}.{sub}", rest
    if not eq or not dot or not section or not key or "." in key:
        raise ConfigError(
            f"--set expects SECTION.KEY=VALUE such as score.top_k=20; received {redact(text)!r}"
        )
    return section.strip(), key.strip(), _override_value(value.strip())


class JobFile:
    """Reads one job file's sections, remembering where each value came from."""

    def __init__(self, source: Path, tables: dict[str, dict[str, Value]]) -> None:
        self.file = str(source)
        self.tables = tables
        self.warnings: list[str] = []

    # -- messages ------------------------------------------------------------------------------

    def where(self, section: str, key: str, v: Value | None = None) -> str:
        origin = f" (set by {redact(v.origin)})" if v is not None and v.origin else ""
        return f"{self.file}: [{section}] {key}{origin}"

    def bad(self, section: str, key: str, v: Value, expected: str) -> NoReturn:
        raise ConfigError(
            f"{self.where(section, key, v)} must be {expected}; received {shown_value(v.value)}"
        )

    def named(self, section: str, e: OptionError) -> ConfigError:
        """A spec's option error, its key named by file, section and the override that set it."""
        v = self.get(section, e.key)
        return ConfigError(e.named(lambda k: self.where(section, k, v) if k == e.key else k))

    def option(self, section: str, opt: Option, v: Value) -> Any:
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

    def get(self, section: str, key: str) -> Value | None:
        return self.tables.get(section, {}).get(key)

    def require(self, section: str, key: str) -> Value:
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

    def _int(self, section: str, key: str, v: Value, minimum: int | None) -> int:
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
        self, section: str, key: str, v: Value, low: float, high: float | None, high_open: bool
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
            close = _hint(v.value, choices, '"{}"') if isinstance(v.value, str) else ""
            self.bad(section, key, v, f"one of {_quote(choices)}{close}")
        return v.value

    # -- paths ------------------------------------------------------------------------------

    def template(self, section: str, key: str, v: Value, allowed: Sequence[str]) -> str:
        """The absolute template of a path value, its placeholders checked."""
        if not isinstance(v.value, str) or not v.value.strip():
            self.bad(section, key, v, "a path (a non-empty string)")
        try:
            text = path_text(v.value, self.where(section, key, v).removeprefix(self.file + ": "))
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
        if uri_scheme(text) is not None:
            return text  # a URI is absolute
        return str(v.base / os.path.expanduser(text))

    def rendered(
        self, section: str, key: str, v: Value, date: dt.date, job: str, allowed: Sequence[str]
    ) -> Path:
        """A path rendered for the run date (no ``{run_id}``)."""
        return to_path(render(self.template(section, key, v, allowed), date=date, job=job))

    def input_path(
        self, section: str, key: str, date: dt.date, job: str, *, what: str
    ) -> Path | None:
        """An existing input path, or None when the key is absent."""
        v = self.get(section, key)
        if v is None:
            return None
        path = self.rendered(section, key, v, date, job, INPUT_PLACEHOLDERS)
        if not is_remote(path) and not path.exists():  # a remote one: checked when read
            raise ConfigError(f"{self.where(section, key, v)}: {what} not found: {path}")
        return path


def read_toml(source: Path) -> dict[str, Any]:
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


def collect(
    source: Path,
    doc: Mapping[str, Any],
    overrides: Sequence[str],
    environ: Mapping[str, str],
) -> tuple[dict[str, dict[str, Value]], list[str]]:
    """Merge the file, the environment and ``--set`` into sections of values."""
    file = str(source)
    base = source.resolve().parent
    tables: dict[str, dict[str, Value]] = {}
    for name, table in doc.items():
        if name not in KEYS:
            if isinstance(table, dict):
                raise ConfigError(
                    f"{file}: unknown section [{name}]{_hint(name, list(KEYS), '[{}]')}; "
                    "expected [job], [train], [score], [gate], [table], [publish] or [storage]"
                )
            raise ConfigError(
                f"{file}: unknown top-level key `{name}`; keys belong in a section "
                "([job], [train], [score], [gate], [table], [publish] or [storage])"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{file}: [{name}] must be a table (a section); received {table!r}")
        if name == "publish" and isinstance(table.get("redis"), dict):
            table = dict(table)
            tables["publish.redis"] = {
                k: Value(v, None, base) for k, v in table.pop("redis").items()
            }
        tables[name] = {k: Value(v, None, base) for k, v in table.items()}
    applied: list[str] = []
    cwd = Path.cwd()
    env_items = sorted((k, v) for k, v in environ.items() if k.startswith(ENV_PREFIX))
    for var, text in env_items:
        section, _, key = var[len(ENV_PREFIX) :].partition("_")
        section = section.lower()
        if section == "publish" and key.startswith("REDIS_"):
            section, key = "publish.redis", key.removeprefix("REDIS_")
        if section not in KEYS or not key:
            continue  # BATCHRANK_* variables of other purposes
        if section in ("train", "gate") and section not in tables:
            continue  # the environment tunes a [train] step or a [gate]; it does not add one
        if section == "score" and key.lower() in _COMMAND_LINE_ONLY:
            continue  # `batchrank score` reads it (BATCHRANK_SCORE_WORK_DIR); a job has its own
        origin = f"{var}={redact(text)}"
        tables.setdefault(section, {})[key.lower()] = Value(_override_value(text), origin, cwd)
        applied.append(origin)
    for text in overrides:
        section, key, value = parse_override(text)
        if section not in KEYS:
            raise ConfigError(
                f"{file}: --set {redact(text)}: unknown section `{section}`"
                f"{_hint(section, list(KEYS))}; expected job, train, score, gate, table or publish"
            )
        origin = f"--set {redact(text)}"
        tables.setdefault(section, {})[key] = Value(value, origin, cwd)
        applied.append(origin)
    for section, values in tables.items():
        for key, v in values.items():
            if key not in KEYS[section]:
                origin = f" (set by {v.origin})" if v.origin else ""
                raise ConfigError(
                    f"{file}: [{section}] unknown key `{key}`{origin}{_hint(key, KEYS[section])}"
                )
    return tables, applied
