"""Reading a job file's merged values typed (:mod:`batchrank.jobs.sections` merges them).

:class:`JobFile` reads the values of the TOML, the environment and ``--set`` as strings,
numbers, choices and paths, and words every problem as a :class:`~batchrank.errors.ConfigError`
naming the file, the section, the key and the override that set it.
:mod:`batchrank.jobs.loader` builds the job's spec from it.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from batchrank.errors import ConfigError
from batchrank.fs import is_remote, redact
from batchrank.jobs.paths import TemplateError, placeholders_of, render
from batchrank.jobs.sections import Value, hint
from batchrank.options import Option, OptionError, shown_value
from batchrank.uris import path_text, to_path, uri_scheme

__all__ = ["INPUT_PLACEHOLDERS", "JobFile"]


INPUT_PLACEHOLDERS = ("date", "job")
"""Placeholders an input path may use."""


def _quote(choices: Sequence[str]) -> str:
    items = [f'"{c}"' for c in choices]
    return ", ".join(items[:-1]) + f" or {items[-1]}" if len(items) > 1 else items[0]


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
            close = hint(v.value, choices, '"{}"') if isinstance(v.value, str) else ""
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
                    f"{hint(name, allowed, '{{{}}}')}; this key allows {expected}"
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
