"""The typed, frozen specification of one scoring run: the one declaration of the score options.

Each field is an option: its type and default, and in its metadata (:func:`batchrank.options.doc`)
one line of doc and its bounds. ``batchrank score``'s flags, the job file's ``[score]`` keys,
``--set score.KEY``, ``BATCHRANK_SCORE_*`` and ``docs/options.md`` are all derived from
:data:`SCORE_OPTIONS`, and every value, whoever gives it, is validated once, here, on
construction.
"""

from __future__ import annotations

import datetime as dt
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from batchrank.errors import ConfigError
from batchrank.formats import (
    TABLE_FORMATS,
    Compression,
    Layout,
    OutputFormat,
    output_kind_of,
)
from batchrank.options import Option, OptionError, doc, options_of
from batchrank.options_doc import options_table
from batchrank.scoring.spec_checks import check_combinations

if TYPE_CHECKING:
    from batchrank.sinks.redis.target import RedisTarget

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "SCORE_OPTIONS",
    "Engine",
    "Format",
    "Layout",
    "ScoreSpec",
    "Unknown",
    "options_markdown",
]

Format = OutputFormat
Unknown = Literal["skip", "oov", "fail"]
Engine = Literal["local", "ray"]
Progress = Literal["auto", "bar", "log", "none"]
TableMode = Literal["replace-partition", "append"]

# Rows per chunk. Measured at 20M pairs: 262,144 gave 695 MiB peak RSS and 13 s, against
# 973 MiB and 22 s for 1,000,000 (cache-sized sorts and buffers).
DEFAULT_CHUNK_ROWS = 262_144


@dataclass(frozen=True, kw_only=True)
class ScoreSpec:
    """Everything a scoring run needs; validated on construction (:class:`OptionError`)."""

    model: Path = field(metadata=doc("Model bundle folder."))
    pairs: tuple[str, ...] = field(
        metadata=doc(
            "Parquet/CSV files, folders or globs of (user, movie) pairs; `all`: every movie for "
            "every user of the model."
        )
    )
    out: Path = field(
        metadata=doc(
            "Output file (a folder of part files with --max-rows-per-file); its suffix names the "
            "format: .parquet, .csv, .jsonl or .ndjson, text ones optionally .gz or .zst "
            "compressed. With `--format delta` or `iceberg`: the table's folder. Its manifest is "
            "`<out>.manifest.json`."
        )
    )
    items: Path | None = field(
        default=None,
        metadata=doc(
            "Titles: a CSV or Parquet items file, a u.item file, or a MovieLens folder or .zip "
            "(default: the bundle's titles)."
        ),
    )
    users: Path | None = field(
        default=None, metadata=doc("With pairs `all`: score only these users.")
    )
    top_k: int = field(default=10, metadata=doc("Recommendations per user.", low=1, high=100_000))
    exclude: tuple[str, ...] = field(
        default=(),
        metadata=doc(
            "Parquet/CSV files, folders or globs of (user, movie) pairs never to recommend, "
            "typically the training ratings; applied before top-k (repeatable)."
        ),
    )
    deny_items: Path | None = field(
        default=None,
        metadata=doc("CSV/Parquet file of movie ids never to recommend (applied before top-k)."),
    )
    allow_items: Path | None = field(
        default=None,
        metadata=doc("CSV/Parquet file of the only movie ids to recommend (before top-k)."),
    )
    min_stars: float | None = field(
        default=None,
        metadata=doc("Drop candidates predicted below this many stars (before top-k)."),
    )
    format: Format | None = field(
        default=None,
        metadata=doc(
            "Output format; a file's must agree with its suffix, which names it anyway; "
            "`delta` or `iceberg` write a lake table (docs/tables.md)."
        ),
    )
    layout: Layout = field(
        default="long",
        metadata=doc("`long`: a row per recommendation; `nested`: a row per user with a list."),
    )
    max_rows_per_file: int | None = field(
        default=None,
        metadata=doc(
            "Write the output as a folder of part files (part-00000.parquet, ...) of at most "
            "N rows each (nested layout: N users); a user is never split across parts, so a "
            "part exceeds N only when one user's list alone does. See docs/partitioned.md.",
            low=1,
        ),
    )
    user_col: str | None = field(
        default=None,
        metadata=doc(
            "User id column of the pairs and the users file (default: the one the model was "
            "trained with, else `user_id`)."
        ),
    )
    item_col: str | None = field(
        default=None,
        metadata=doc(
            "Movie id column of the pairs and the items file (default: the one the model was "
            "trained with, else `movie_id`)."
        ),
    )
    title_col: str | None = field(
        default=None,
        metadata=doc(
            "Title column of the items file (default: the one the model was trained with, "
            "else `title`)."
        ),
    )
    chunk_rows: int = field(
        default=DEFAULT_CHUNK_ROWS,
        metadata=doc(
            "Rows read, validated and scored at a time; bounds memory.", low=1, high=2**27
        ),
    )
    batch_size: int = field(
        default=8192,
        metadata=doc("Rows per jitted call (rounded up to a multiple of 64).", low=1, high=2**22),
    )
    unknown: Unknown = field(
        default="skip",
        metadata=doc(
            "Unknown users or movies: skip them (counted), score them with the OOV row, or fail."
        ),
    )
    max_reject_fraction: float = field(
        default=0.01,
        metadata=doc(
            "Share of rows with null or unparsable ids past which the run fails.", low=0, high=1
        ),
    )
    rejects: Path | None = field(
        default=None, metadata=doc("CSV file receiving rejected rows (file, row, ids, reason).")
    )
    publish: str | None = field(
        default=None,
        repr=False,  # may hold a password
        metadata=doc(
            "Also publish each user's list to Redis with an atomic generation swap: "
            "`redis://[user:password@]host:port/db` (`rediss://`: TLS); options as its query "
            "(`?prefix=..&keep=2&value=compact&timeout=10&retries=3`), see docs/serving.md. "
            "A job uses [publish.redis].",
            scope="cli",
        ),
    )
    memory_budget_mb: float = field(
        default=1024.0,
        metadata=doc(
            "Memory (MiB) of the top-k state, compaction copies included (it holds rows up to "
            "60 % of it and compacts one user range at a time); past it, scored rows spill to "
            "disk (at most 1 TiB).",
            low=0,
            low_open=True,
            high=1024 * 1024,
        ),
    )
    work_dir: Path | None = field(
        default=None,
        metadata=doc(
            "Record finished inputs here so a re-run resumes after a crash (a job keeps its "
            "own beside its output).",
            scope="cli",
        ),
    )
    engine: Engine = field(
        default="local", metadata=doc("`local` streaming engine or `ray` (Ray Data).")
    )
    ray_address: str | None = field(
        default=None,
        metadata=doc("Ray cluster: `auto` or `ray://HOST:PORT` (default: a local Ray)."),
    )
    concurrency: int | None = field(
        default=None, metadata=doc("Ray: number of scoring actors.", low=1, high=4096)
    )
    gpus_per_worker: float = field(
        default=0.0, metadata=doc("Ray: GPUs per scoring actor.", low=0, high=64)
    )
    score_table: Literal["auto", "never"] = field(
        default="auto",
        metadata=doc("`auto`: score each (user, movie) cell once when pairs outnumber cells 2:1."),
    )
    precision: Literal["float32", "bfloat16"] = field(
        default="float32",
        metadata=doc(
            "Arithmetic of the hidden Dense layers: `bfloat16` (opt-in, folded seed/default "
            "models only) multiplies in bfloat16 with float32 accumulation, faster on CPUs with "
            "native bfloat16, with scores that can differ in the third digit and so top-k lists "
            "that can differ (`batchrank bench` prints the agreement)."
        ),
    )
    csv_formulas: Literal["escape", "keep"] = field(
        default="escape",
        metadata=doc(
            "CSV output: `escape` prefixes a `'` to titles starting with = + - @ tab or CR, which "
            "spreadsheets would run as formulas (OWASP); `keep` writes them as they are."
        ),
    )
    date: dt.date | None = field(
        default=None,
        metadata=doc(
            "Table outputs: the run date, the value of the partition column, whose partition "
            "the run replaces (default: today; a job's date).",
            scope="cli",
        ),
    )
    table_mode: TableMode = field(
        default="replace-partition",
        metadata=doc(
            "Table outputs: `replace-partition` replaces the run date's partition in one commit; "
            "`append` adds the rows to the table.",
            scope="table",
        ),
    )
    table_partition_column: str = field(
        default="run_date",
        metadata=doc("Table outputs: the date column the table is partitioned by.", scope="table"),
    )
    table_catalog: str = field(
        default="batchrank",
        metadata=doc(
            "Iceberg: the catalog's name (pyiceberg's `PYICEBERG_CATALOG__<NAME>__*` settings "
            "and `.pyiceberg.yaml` apply).",
            scope="table",
        ),
    )
    table_catalog_uri: str | None = field(
        default=None,
        metadata=doc(
            "Iceberg: the catalog URI: `sqlite:///...`, `postgresql+psycopg2://...`, "
            "`http(s)://...` (REST) or `thrift://...` (Hive); default: the SQLite file "
            "`batchrank-catalog.db` beside the table (for an object-store table, in "
            "`~/.cache/batchrank/catalogs/`).",
            scope="table",
        ),
    )
    table_warehouse: str | None = field(
        default=None,
        metadata=doc(
            "Iceberg: the catalog's warehouse (default: the folder holding the table).",
            scope="table",
        ),
    )
    table_identifier: str | None = field(
        default=None,
        metadata=doc(
            "Iceberg: the table's `namespace.name` in the catalog (default: "
            "`batchrank.<name of --out>`).",
            scope="table",
        ),
    )
    progress: Progress = field(
        default="auto",
        metadata=doc(
            "Progress display: bar on a terminal, log lines otherwise, or none.", scope="run"
        ),
    )
    run_id: str | None = field(
        default=None,
        metadata=doc("Run id in the manifest and logs (default: generated).", scope="run"),
    )
    extra_manifest: dict[str, object] = field(default_factory=dict)
    """Extra keys recorded in the manifest (for instance the job's name); set by the program."""

    def __post_init__(self) -> None:
        for opt in SCORE_OPTIONS:
            object.__setattr__(self, opt.name, opt.coerce(getattr(self, opt.name)))
        check_combinations(self)

    @classmethod
    def from_options(cls, **options: Any) -> ScoreSpec:
        """A spec from keyword options, as ``batchrank.score(**options)`` takes them.

        Raises:
            ConfigError: an unknown or missing option (with a suggestion), or a bad value; never
                the ``TypeError`` of a dataclass constructor.
        """
        names = [f.name for f in fields(cls)]
        for key in options:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
                hint = f" (did you mean `{close[0]}`?)" if close else ""
                raise ConfigError(f"unknown score option `{key}`{hint}")
        for opt in SCORE_OPTIONS:
            if opt.required and opt.name not in options:
                raise ConfigError(f"missing score option `{opt.name}` ({opt.doc})")
        return cls(**options)

    @property
    def is_table(self) -> bool:
        """Whether the output is a lake table (``delta`` or ``iceberg``), not a file."""
        return self.format in TABLE_FORMATS

    def with_columns(self, columns: Mapping[str, str] | None) -> ScoreSpec:
        """This spec with the id and title columns it leaves unset taken from ``columns`` (a
        bundle's :attr:`~batchrank.bundle.Bundle.columns`), else batchrank's defaults."""
        from batchrank.bundle import DEFAULT_COLUMNS

        cols = {**DEFAULT_COLUMNS, **(columns or {})}
        return replace(
            self,
            user_col=self.user_col or cols["user"],
            item_col=self.item_col or cols["item"],
            title_col=self.title_col or cols["title"],
        )

    @property
    def user_column(self) -> str:
        """The user id column (after :meth:`with_columns`, the bundle's when unset)."""
        return self.user_col or "user_id"

    @property
    def item_column(self) -> str:
        """The movie id column (after :meth:`with_columns`, the bundle's when unset)."""
        return self.item_col or "movie_id"

    @property
    def title_column(self) -> str:
        """The title column (after :meth:`with_columns`, the bundle's when unset)."""
        return self.title_col or "title"

    @property
    def compression(self) -> Compression:
        """The output's compression, from its suffix (``top.csv.gz``: gzip), or None."""
        kind = output_kind_of(self.out)
        return kind.compression if kind is not None else None

    @property
    def manifest_path(self) -> Path:
        """Where the manifest goes: ``<out>.manifest.json``."""
        from batchrank.scoring.commit import manifest_path_of

        return manifest_path_of(self.out)

    @property
    def publish_target(self) -> RedisTarget | None:
        """The Redis target of ``publish`` (``{job}`` in its prefix: the output's stem)."""
        if self.publish is None:
            return None
        from batchrank.sinks.redis.target import target_of

        try:
            target = target_of(self.publish, where="‹publish›")
        except ConfigError as e:
            raise OptionError("publish", str(e)) from None
        return replace(target, prefix=target.key_prefix(self.out.name.split(".")[0]))

    @property
    def is_cross_join(self) -> bool:
        """True for ``--pairs all``."""
        return self.pairs == ("all",)


SCORE_OPTIONS: tuple[Option, ...] = options_of(ScoreSpec)
"""Every score option, in declaration order (``scope`` says where each can be set)."""


def options_markdown() -> str:
    """The docs' table of score options (``docs/options.md``), generated from the fields."""
    return options_table(SCORE_OPTIONS)


if __name__ == "__main__":  # pragma: no cover
    print(options_markdown(), end="")
