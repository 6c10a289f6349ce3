"""Declared options: a spec's dataclass fields say each option's type, default, bounds and doc.

A spec declares an option once, as a field whose metadata is :func:`doc`. :func:`options_of` reads
the fields into :class:`Option` objects, from which the command-line flags
(:mod:`batchrank.cli.options`), the job file's keys and their parsing (:mod:`batchrank.jobs.loader`)
and the docs' option table are derived. :meth:`Option.coerce` is the one validation of a value,
whoever gave it: the Python API, a flag, a job file, ``--set`` or ``BATCHRANK_*``. It accepts
numeric strings where numbers are expected (``top_k="5"``, what templating produces) and
refuses everything else with an :class:`OptionError`, which callers name in their own words
(``--top-k``, ``jobs/x.toml: [score] top_k``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import math
import operator
import os
import re
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from batchrank.errors import ConfigError
from batchrank.fs import ObjectPath
from batchrank.uris import as_path, path_text

__all__ = [
    "ENV_PREFIX",
    "Option",
    "OptionError",
    "Scope",
    "doc",
    "flag_of",
    "options_of",
    "shown_value",
]

ENV_PREFIX = "BATCHRANK_"
"""Prefix of environment overrides: ``BATCHRANK_<SECTION>_<KEY>``, ``BATCHRANK_SCORE_TOP_K=20``."""

Scope = Literal["all", "cli", "run", "table"]
"""Where an option is set: ``all`` (CLI and job file), ``cli`` (the command line only: a job
manages it), ``run`` (by the program for one run: neither flag nor job key), ``table`` (CLI and
the job file's ``[table]`` section, its key the name without ``table_``)."""

Kind = Literal["path", "paths", "int", "float", "str", "choice", "date"]

_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_TOKEN = re.compile(r"‹([a-z_]+)›")


class OptionError(ConfigError):
    """A bad option value or combination; ``‹key›`` marks in the text are named by the caller.

    ``str()`` names keys as they are (``top_k``): the Python API's names.
    """

    def __init__(self, key: str, text: str) -> None:
        self.key = key
        """The option at fault."""
        self.text = text
        """The message, with ``‹key›`` where an option's name goes."""
        super().__init__(self.named(lambda k: k))

    def named(self, name: Callable[[str], str]) -> str:
        """The message with each ``‹key›`` replaced by ``name(key)``."""
        return _TOKEN.sub(lambda m: name(m.group(1)), self.text)


def flag_of(key: str) -> str:
    """The command-line flag of an option: ``top_k`` is ``--top-k``."""
    return "--" + key.replace("_", "-")


def shown_value(value: Any, limit: int = 80) -> str:
    """``repr(value)``, shortened: a message shows what was received, not a whole document."""
    try:
        text = repr(value)
    except RecursionError:
        return "a value nested too deeply"
    return text if len(text) <= limit else text[: limit - 4] + " ..."


def doc(
    text: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    scope: Scope = "all",
) -> dict[str, Any]:
    """A field's metadata that declares it an option: ``field(default=10, metadata=doc(...))``.

    Args:
        text: one line for people: the flag's help, the docs' table.
        low: smallest value allowed (numbers).
        high: largest value allowed (numbers).
        low_open: ``low`` itself is not allowed.
        scope: where the option can be set (see :data:`Scope`).
    """
    meta = {"doc": text, "low": low, "high": high, "low_open": low_open, "scope": scope}
    return {"option": meta}


@dataclass(frozen=True)
class Option:
    """One declared option, read from its field: name, type, default, bounds, doc."""

    name: str
    kind: Kind
    optional: bool
    """None is allowed (and means "not set")."""
    required: bool
    default: Any
    doc: str
    scope: Scope
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    low_open: bool = False

    @property
    def job_key(self) -> str:
        """The option's key in its job section: ``[table] mode`` for ``table_mode``."""
        return self.name.removeprefix("table_") if self.scope == "table" else self.name

    @property
    def flag(self) -> str:
        """The command-line flag: ``--top-k``."""
        return flag_of(self.name)

    def envvar(self, section: str) -> str:
        """The environment variable that sets the option: ``BATCHRANK_SCORE_TOP_K``."""
        return f"{ENV_PREFIX}{section.upper()}_{self.name.upper()}"

    @property
    def expected(self) -> str:
        """What a value must be, for messages and docs: ``an integer in [1, 100000]``."""
        if self.kind == "choice":
            items = [f'"{c}"' for c in self.choices]
            return "one of " + (", ".join(items[:-1]) + " or " + items[-1])
        if self.kind in ("int", "float"):
            bounded = self.low is not None and self.high is not None
            what = (
                "an integer" if self.kind == "int" else "a number" if bounded else "a finite number"
            )
            return f"{what} {self.bounds}" if self.bounds else what
        if self.kind == "paths":
            return "a path or a list of paths"
        if self.kind == "date":
            return "a date YYYY-MM-DD"
        return "a path (a non-empty string)" if self.kind == "path" else "a non-empty string"

    @property
    def bounds(self) -> str:
        """A number's bounds: ``in [1, 100000]``, ``> 0``, or empty."""
        if self.low is None:
            return ""
        low = _number(self.low)
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {low}"
        return f"in {'(' if self.low_open else '['}{low}, {_number(self.high)}]"

    def bad(self, value: Any) -> OptionError:
        """The error for a value that is not :attr:`expected`."""
        hint = ""
        if self.kind == "choice" and isinstance(value, str):
            close = difflib.get_close_matches(value, self.choices, n=1, cutoff=0.6)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
        return OptionError(
            self.name, f"‹{self.name}› must be {self.expected}{hint}; received {shown_value(value)}"
        )

    def coerce(self, value: Any) -> Any:
        """The value, validated and converted to the option's type.

        Raises:
            OptionError: the value is not of the type, or out of bounds.
        """
        if value is None:
            if self.optional:
                return None
            raise self.bad(value)
        if self.kind == "int":
            return self._bounded(self._int(value), value)
        if self.kind == "float":
            return self._bounded(self._float(value), value)
        if self.kind == "choice":
            if value not in self.choices:
                raise self.bad(value)
            return value
        if self.kind == "str":
            if not isinstance(value, str) or not value.strip():
                raise self.bad(value)
            return value
        if self.kind == "date":
            return self._date(value)
        if self.kind == "path":
            return as_path(self.local_path(value), f"‹{self.name}›")
        values = [value] if isinstance(value, str | os.PathLike) else value
        if isinstance(values, Sequence) and not values and not self.required:
            return ()  # an optional list of paths left empty (a repeatable flag not given)
        if not isinstance(values, Sequence) or not values:
            raise self.bad(value)
        return tuple(self.local_path(v) for v in values)

    def local_path(self, value: Any) -> str:
        """One path's text: ``file://`` stripped; object-store URIs checked."""
        if isinstance(value, ObjectPath):
            return str(value)
        if not isinstance(value, str | os.PathLike) or not os.fspath(value).strip():
            raise self.bad(value)
        try:
            return path_text(value, f"‹{self.name}›")
        except ConfigError as e:
            raise OptionError(self.name, str(e)) from None

    def _date(self, value: Any) -> dt.date:
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return value
        if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
            try:
                return dt.date.fromisoformat(value.strip())
            except ValueError:
                pass
        raise self.bad(value)

    def _int(self, value: Any) -> int:
        if isinstance(value, str) and _INT.fullmatch(value.strip()):
            return int(value.strip())
        if isinstance(value, bool | float):
            raise self.bad(value)
        try:
            return operator.index(value)  # int and numpy integers, nothing that would truncate
        except TypeError:
            raise self.bad(value) from None

    def _float(self, value: Any) -> float:
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            number = float(value.strip())
        elif isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        else:
            raise self.bad(value)
        if not math.isfinite(number):
            raise self.bad(value)
        return number

    def _bounded(self, number: Any, value: Any) -> Any:
        low, high = self.low, self.high
        if low is not None and (number <= low if self.low_open else number < low):
            raise self.bad(value)
        if high is not None and number > high:
            raise self.bad(value)
        return number


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _kind(hint: Any) -> tuple[Kind, bool, tuple[str, ...]]:
    """The kind of a field's type, whether None is allowed, and a Literal's choices."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"an option is of one type (or None); received {hint!r}")
        kind, _, choices = _kind(rest[0])
        return kind, True, choices
    if typing.get_origin(hint) is Literal:
        return "choice", False, tuple(str(a) for a in args)
    if typing.get_origin(hint) is tuple:
        return "paths", False, ()
    kinds: dict[Any, Kind] = {
        Path: "path",
        int: "int",
        float: "float",
        str: "str",
        dt.date: "date",
    }
    if hint in kinds:
        return kinds[hint], False, ()
    raise TypeError(f"no option kind for the type {hint!r}")


def options_of(cls: type) -> tuple[Option, ...]:
    """The options a dataclass declares, in field order (fields with :func:`doc` metadata)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get("option")
        if meta is None:
            continue
        required = f.default is dataclasses.MISSING
        kind, optional, choices = _kind(hints[f.name])
        out.append(
            Option(
                name=f.name,
                kind=kind,
                optional=optional,
                required=required,
                default=None if required else f.default,
                doc=meta["doc"],
                scope=meta["scope"],
                choices=choices,
                low=meta["low"],
                high=meta["high"],
                low_open=meta["low_open"],
            )
        )
    return tuple(out)
