"""The cross-option checks of a :class:`~batchrank.scoring.spec.ScoreSpec`, apart from the spec
so that it stays one declaration of the options (as :mod:`batchrank.scoring.table_options`)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from batchrank.formats import (
    COMPRESSIONS,
    OUTPUT_SUFFIXES,
    TABLE_FORMATS,
    OutputFormat,
    output_kind_of,
)
from batchrank.fs import is_remote
from batchrank.options import OptionError
from batchrank.scoring.table_options import TableFields, check_table_options

__all__ = ["check_combinations", "output_format_of"]


class _Spec(TableFields, Protocol):
    """The fields of a :class:`~batchrank.scoring.spec.ScoreSpec` checked here (a protocol, so
    that this module does not import the spec that imports it)."""

    @property
    def pairs(self) -> tuple[str, ...]: ...
    @property
    def users(self) -> Path | None: ...
    @property
    def work_dir(self) -> Path | None: ...
    @property
    def out(self) -> Path: ...
    @property
    def max_rows_per_file(self) -> int | None: ...
    @property
    def publish(self) -> str | None: ...
    @property
    def publish_target(self) -> object: ...


def check_combinations(spec: _Spec) -> None:
    """Refuse options that contradict each other, then resolve ``format`` (frozen: set through
    ``object.__setattr__``, as in ``__post_init__``).

    Raises:
        OptionError: naming the option at fault.
    """
    pairs = spec.pairs
    if "all" in pairs and len(pairs) > 1:
        raise OptionError("pairs", '‹pairs›: "all" cannot be combined with other pairs')
    if spec.users is not None and pairs != ("all",):
        raise OptionError(
            "users", f'‹users› only applies with ‹pairs› = "all"; received pairs {list(pairs)}'
        )
    folder_ok = spec.format in TABLE_FORMATS or spec.max_rows_per_file is not None
    if not is_remote(spec.out) and spec.out.is_dir() and not folder_ok:
        raise OptionError(
            "out", f"‹out› is a folder ({spec.out}); expected a file name (a folder of part "
            "files is written only with ‹max_rows_per_file›)",
        )  # fmt: skip
    object.__setattr__(spec, "format", output_format_of(spec))
    check_table_options(spec)
    if spec.publish is not None:
        spec.publish_target  # noqa: B018 (validates the URL, password redacted)
    if spec.layout == "nested" and spec.format == "csv":
        raise OptionError(
            "layout", "‹layout› is 'nested', which needs format parquet or jsonl; the output "
            "format is csv",
        )  # fmt: skip


def output_format_of(spec: _Spec) -> OutputFormat:
    """The output format: a table's, else the one ``out``'s suffix names, agreeing with
    ``format`` when it is given.

    Raises:
        OptionError: an unknown suffix, or a format the suffix contradicts.
    """
    if spec.format in TABLE_FORMATS:
        return spec.format
    kind = output_kind_of(spec.out)
    if kind is None:
        suffix = "".join(spec.out.suffixes[-2:]) or "no suffix"
        accepted = (
            ", ".join(OUTPUT_SUFFIXES) + " (text ones may add " + ", ".join(COMPRESSIONS) + ")"
        )
        raise OptionError(
            "out", f"‹out› {spec.out.name!r}: unknown output suffix ({suffix}); expected one "
            f"of {accepted}",
        )  # fmt: skip
    if spec.format is not None and spec.format != kind.format:
        raise OptionError(
            "format", f"‹format› {spec.format} contradicts ‹out› {spec.out.name!r}, whose "
            f"suffix names {kind.format}; make them agree or drop the format",
        )  # fmt: skip
    return kind.format
