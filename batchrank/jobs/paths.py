"""Templated paths of job files: ``{date}``, ``{job}`` and ``{run_id}``.

A template is a path string that may hold placeholders in :meth:`str.format` syntax. ``{date}``
is the run date (``2025-01-31``; a format spec such as ``{date:%Y/%m/%d}`` works too), ``{job}``
the job's name and ``{run_id}`` the run's id. The *static prefix* of a template (the folders
before the first one holding a placeholder) does not change from run to run: it holds the lock,
the ``latest`` pointer and, when the run id is part of the output folder, the work folder.
"""

from __future__ import annotations

import datetime as dt
import re
import string
from dataclasses import dataclass
from pathlib import Path

from batchrank.fs import ObjectPath
from batchrank.uris import to_path

__all__ = [
    "PLACEHOLDERS",
    "PathTemplate",
    "TemplateError",
    "placeholders_of",
    "render",
    "shown",
    "static_prefix",
]

PLACEHOLDERS = ("date", "job", "run_id")
"""Every placeholder a job file may use."""


class _Mark:
    """Formats as a marker, whatever the format spec, to find where placeholders sit."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __format__(self, spec: str) -> str:
        return f"\0{self.name}\0"


def shown(path: Path) -> str:
    """A path for people: relative to the current folder when under it, else as it is."""
    if isinstance(path, ObjectPath):
        return path.display()
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class TemplateError(ValueError):
    """A placeholder whose format spec would render wrongly (``{date:YYYY-MM-DD}``, ``{job:d}``)."""


_STRFTIME = re.compile(r"%(-?)(.?)")
_STRFTIME_CODES = frozenset("aAbBcdfGHIjmMpSuUVwWxXyYzZ%")
_DATE_CODES = frozenset("aAbBcdGjmuUVwWxyY")
"""Codes that change with the date (``%H`` of a date is always ``00``)."""


def _check_spec(field: str, spec: str) -> None:
    if not spec:
        return
    shown = f"{{{field}:{spec}}}"
    if field != "date":
        raise TemplateError(f"placeholder {shown} takes no format spec; write {{{field}}}")
    codes = [code for _, code in _STRFTIME.findall(spec)]
    bad = [c for c in codes if c not in _STRFTIME_CODES]
    if "{" in spec or bad:
        raise TemplateError(
            f"placeholder {shown} has an unknown strftime code"
            + (f" %{bad[0]}" if bad and bad[0] else "")
            + "; expected codes such as %Y, %m, %d ({date:%Y/%m/%d})"
        )
    if not _DATE_CODES & set(codes):
        raise TemplateError(
            f"placeholder {shown} has no strftime date code, so every date renders the same path; "
            "write {date} (2025-01-31) or codes such as {date:%Y/%m/%d}"
        )


def placeholders_of(template: str) -> list[str]:
    """The placeholder names a template uses, in order.

    Raises:
        TemplateError: a placeholder's format spec or conversion would render wrongly.
        ValueError: the braces are malformed (``{`` without ``}``, or a positional ``{}``).
    """
    names = []
    for _, field, spec, conversion in string.Formatter().parse(template):
        if field is None:
            continue
        if not field.isidentifier():
            raise ValueError(f"placeholder {{{field}}} is not a name")
        if conversion is not None:
            raise TemplateError(
                f"placeholder {{{field}!{conversion}}} has a conversion; write {{{field}}}"
            )
        _check_spec(field, spec or "")
        names.append(field)
    return names


def render(template: str, *, date: dt.date, job: str, run_id: str | None = None) -> str:
    """Fill a template's placeholders (``{run_id}`` must be given when used)."""
    values: dict[str, object] = {"date": date, "job": job}
    if run_id is not None:
        values["run_id"] = run_id
    return template.format_map(values)


def _prefix_before_mark(text: str) -> Path:
    parts = Path(text).parts
    for n, part in enumerate(parts):
        if "\0" in part:
            return Path(*parts[:n]) if n else Path(".")
    return Path(text).parent


def static_prefix(template: str) -> Path:
    """The folders of a template before the first one holding any placeholder.

    For ``/data/exports/{date}/top10.parquet`` this is ``/data/exports``; for a template whose
    only placeholder is in the file name, or that has none, it is the file's folder.
    """
    marked = template.format_map({name: _Mark(name) for name in PLACEHOLDERS})
    return _prefix_before_mark(marked)


@dataclass(frozen=True, kw_only=True)
class PathTemplate:
    """An absolute output path that may hold ``{run_id}``, with ``{date}`` and ``{job}`` known."""

    template: str
    """The absolute template, as written in the job file (joined to the job file's folder)."""
    date: dt.date
    """The run date that fills ``{date}``."""
    job: str
    """The job name that fills ``{job}``."""

    @property
    def uses_run_id(self) -> bool:
        """Whether the path changes from run to run."""
        return "run_id" in placeholders_of(self.template)

    def render(self, run_id: str) -> Path:
        """The concrete path for a run."""
        text = render(self.template, date=self.date, job=self.job, run_id=run_id)
        return to_path(text)

    @property
    def static_root(self) -> Path:
        """The folders before the first placeholder (see :func:`static_prefix`)."""
        return to_path(static_prefix(self.template))

    @property
    def run_independent_folder(self) -> Path:
        """The output's folder if it does not depend on the run id, else the part that does not.

        For ``exports/{date}/top10.parquet`` this is ``exports/2025-01-31``; for
        ``exports/{date}/{run_id}/top10.parquet`` it is also ``exports/2025-01-31``.
        """
        marked = self.template.format_map(
            {"date": self.date, "job": self.job, "run_id": _Mark("run_id")}
        )
        return to_path(_prefix_before_mark(marked))
