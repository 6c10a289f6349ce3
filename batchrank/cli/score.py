"""``batchrank score``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from batchrank.scoring.spec import DEFAULT_CHUNK_ROWS


@click.command("score")
@click.option(
    "--model", required=True, type=click.Path(path_type=Path), help="Model bundle folder."
)
@click.option(
    "--pairs",
    "pairs",
    required=True,
    multiple=True,
    help="Parquet/CSV file, folder or glob of (user, movie) pairs; repeatable. `all`: every "
    "movie for every user of the model.",
)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output file.")
@click.option("--items", type=click.Path(path_type=Path), help="Items file with titles.")
@click.option(
    "--users", type=click.Path(path_type=Path), help="With --pairs all: only these users."
)
@click.option("--top-k", default=10, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["parquet", "csv", "jsonl"]),
    help="Output format (default: from --out's suffix, else parquet).",
)
@click.option("--layout", default="long", show_default=True, type=click.Choice(["long", "nested"]))
@click.option("--user-col", default="user_id", show_default=True)
@click.option("--item-col", default="movie_id", show_default=True)
@click.option("--title-col", default="title", show_default=True)
@click.option(
    "--chunk-rows", default=DEFAULT_CHUNK_ROWS, show_default=True, type=click.IntRange(min=1)
)
@click.option(
    "--batch-size",
    default=8192,
    show_default=True,
    type=click.IntRange(min=1),
    help="Rows per jitted call (rounded up to a multiple of 64).",
)
@click.option(
    "--unknown",
    default="skip",
    show_default=True,
    type=click.Choice(["skip", "oov", "fail"]),
    help="Unknown users or movies: skip (counted), score with the OOV row, or fail.",
)
@click.option("--max-reject-fraction", default=0.01, show_default=True, type=click.FloatRange(0, 1))
@click.option("--rejects", type=click.Path(path_type=Path), help="CSV receiving rejected rows.")
@click.option(
    "--memory-budget-mb",
    default=1024.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Top-k state size past which scored rows spill to disk.",
)
@click.option(
    "--work-dir",
    type=click.Path(path_type=Path),
    help="Record finished inputs here so a re-run resumes after a crash.",
)
@click.option("--engine", default="local", show_default=True, type=click.Choice(["local", "ray"]))
@click.option("--ray-address", help="Ray cluster: auto or ray://HOST:PORT (default: local Ray).")
@click.option("--concurrency", type=click.IntRange(min=1), help="Ray: scoring actors.")
@click.option(
    "--gpus-per-worker", default=0.0, type=click.FloatRange(min=0), help="Ray: GPUs per actor."
)
@click.option(
    "--score-table",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "never"]),
    help="auto: score each (user, movie) cell once when pairs outnumber cells 2:1.",
)
@click.option("--quiet", is_flag=True, help="No progress bar or log lines.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON on stdout.")
def command(
    model: Path,
    pairs: tuple[str, ...],
    out: Path,
    items: Path | None,
    users: Path | None,
    top_k: int,
    fmt: str | None,
    layout: str,
    user_col: str,
    item_col: str,
    title_col: str,
    chunk_rows: int,
    batch_size: int,
    unknown: str,
    max_reject_fraction: float,
    rejects: Path | None,
    memory_budget_mb: float,
    work_dir: Path | None,
    engine: str,
    ray_address: str | None,
    concurrency: int | None,
    gpus_per_worker: float,
    score_table: str,
    quiet: bool,
    as_json: bool,
) -> None:
    """Score candidate pairs and write ranked top-k lists per user, with titles and stars."""
    from batchrank.scoring.api import score
    from batchrank.scoring.spec import ScoreSpec

    if not quiet:
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
        logging.getLogger("batchrank").setLevel(logging.INFO)
    spec = ScoreSpec(
        model=model,
        pairs=pairs,
        out=out,
        items=items,
        users=users,
        top_k=top_k,
        format=fmt,  # type: ignore[arg-type]
        layout=layout,  # type: ignore[arg-type]
        user_col=user_col,
        item_col=item_col,
        title_col=title_col,
        chunk_rows=chunk_rows,
        batch_size=batch_size,
        unknown=unknown,  # type: ignore[arg-type]
        max_reject_fraction=max_reject_fraction,
        rejects=rejects,
        memory_budget_mb=memory_budget_mb,
        work_dir=work_dir,
        engine=engine,  # type: ignore[arg-type]
        ray_address=ray_address,
        concurrency=concurrency,
        gpus_per_worker=gpus_per_worker,
        score_table=score_table,  # type: ignore[arg-type]
        progress="none" if quiet else "auto",
    )
    manifest = score(spec)
    if as_json:
        click.echo(json.dumps(manifest, sort_keys=True, default=str))
    elif not quiet:
        c = manifest["counts"]
        skipped = c["rows_skipped_unknown_user"] + c["rows_skipped_unknown_movie"]
        click.echo(
            f"scored {c['rows_scored']:,} of {c['rows_read']:,} pairs "
            f"({skipped:,} unknown skipped, "
            f"{c['rows_rejected']:,} rejected); wrote top {spec.top_k} for {c['users_written']:,} "
            f"users to {spec.out}",
            err=True,
        )
        click.echo(f"manifest: {spec.manifest_path}", err=True)
