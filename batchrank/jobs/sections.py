"""A job file's raw values: the TOML, the environment and ``--set``, merged, each with its origin.

Precedence, highest first: ``--set SECTION.KEY=VALUE`` on the command line, then environment
variables ``BATCHRANK_<SECTION>_<KEY>`` (for instance ``BATCHRANK_SCORE_TOP_K=20``; ignored for a
``[train]`` step the file does not have, and for options only ``batchrank score`` takes, such as
``BATCHRANK_SCORE_WORK_DIR``), then the job file, then the defaults. An override's
value is read as a TOML value when it is one (``20``, ``true``, ``[1, 5]``, ``"text"``) and as
plain text otherwise (``jsonl``, ``../x.csv``).

:func:`collect` checks every section and key against :data:`KEYS` and returns the merged
sections; :class:`~batchrank.jobs.jobfile.JobFile` reads them typed.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchrank.errors import ConfigError
from batchrank.fs import redact
from batchrank.options import ENV_PREFIX
from batchrank.scoring.spec import SCORE_OPTIONS
from batchrank.sinks.redis.target import OPTION_KEYS as REDIS_KEYS

__all__ = ["ENV_PREFIX", "KEYS", "Value", "collect", "hint", "parse_override", "read_toml"]


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


@dataclass(frozen=True)
class Value:
    """A value with where it came from."""

    value: Any
    origin: str | None
    """None for the job file, else the override that set it (``--set score.top_k=20``)."""
    base: Path
    """Folder that relative paths resolve against."""


def hint(word: str, choices: Sequence[str], fmt: str = "`{}`") -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {fmt.format(close[0])}?)" if close else ""


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
                    f"{file}: unknown section [{name}]{hint(name, list(KEYS), '[{}]')}; "
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
                f"{hint(section, list(KEYS))}; expected job, train, score, gate, table or publish"
            )
        origin = f"--set {redact(text)}"
        tables.setdefault(section, {})[key] = Value(value, origin, cwd)
        applied.append(origin)
    for section, values in tables.items():
        for key, v in values.items():
            if key not in KEYS[section]:
                origin = f" (set by {v.origin})" if v.origin else ""
                raise ConfigError(
                    f"{file}: [{section}] unknown key `{key}`{origin}{hint(key, KEYS[section])}"
                )
    return tables, applied
