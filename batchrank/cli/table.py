"""``batchrank table maintain``: compaction and expiry for a lake table written every night."""

from __future__ import annotations

import json
from typing import Any

import click

from batchrank.cli.logging_options import log_format_option
from batchrank.cli.options import spec_options
from batchrank.scoring.spec import SCORE_OPTIONS

_CATALOG = [o for o in SCORE_OPTIONS if o.scope == "table" and o.name != "table_mode"]


@click.group("table")
def command() -> None:
    """Lake tables written by `batchrank score --format delta|iceberg` (docs/tables.md)."""


@command.command("maintain")
@click.option("--out", required=True, help="The table's folder (as given to `score --out`).")
@click.option(
    "--format", "fmt", required=True, type=click.Choice(["delta", "iceberg"]), help="Its format."
)
@click.option(
    "--retain-days",
    type=click.FloatRange(min=0),
    default=7.0,
    show_default=True,
    help="Keep versions/snapshots (and unreferenced files) younger than this many days.",
)
@click.option("--dry-run", is_flag=True, help="List what would be removed; change nothing.")
@spec_options(_CATALOG, "score")
@log_format_option
def maintain_command(out: str, fmt: str, retain_days: float, dry_run: bool, **catalog: Any) -> None:
    """Compact small files and remove versions, snapshots and orphan files older than
    --retain-days; prints what was done as JSON. Holds the table's lock, as a run does."""
    import datetime as dt

    import pyarrow as pa

    from batchrank.scoring.tables.maintain import maintain
    from batchrank.scoring.tables.target import TableTarget, location_of
    from batchrank.storage.lock import output_lock
    from batchrank.uris import path_text

    target = TableTarget(
        format=fmt,  # type: ignore[arg-type]  # a click.Choice of the two
        location=location_of(path_text(out, "--out")),
        date=dt.date.today(),
        mode="replace-partition",
        partition_column=catalog["table_partition_column"],
        run_id="maintenance",
        user_type=pa.int64(),
        item_type=pa.int64(),
        catalog=catalog["table_catalog"],
        catalog_uri=catalog["table_catalog_uri"],
        warehouse=catalog["table_warehouse"],
        identifier=catalog["table_identifier"],
    )
    with output_lock(target.path, "maintenance"):  # the lock a run of this table takes
        report = maintain(target, retain_days=retain_days, dry_run=dry_run)
    click.echo(json.dumps(report, indent=2, sort_keys=True, default=str))
