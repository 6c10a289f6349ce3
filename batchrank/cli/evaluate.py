"""``batchrank evaluate``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from batchrank.cli.logging_options import log_format_option
from batchrank.cli.options import column_options


@click.command("evaluate")
@click.option(
    "--model", required=True, type=click.Path(path_type=Path), help="Model bundle folder."
)
@click.option(
    "--ratings", required=True, help="MovieLens folder/zip, CSV/Parquet file, or tfds:NAME."
)
@column_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@log_format_option
def command(
    model: Path,
    ratings: str,
    user_col: str,
    item_col: str,
    rating_col: str,
    title_col: str,
    as_json: bool,
) -> None:
    """RMSE (in stars) of a model bundle on a ratings file."""
    from batchrank.evaluation import evaluate
    from batchrank.sources import Columns

    result = evaluate(
        model,
        ratings,
        columns=Columns(user=user_col, item=item_col, rating=rating_col, title=title_col),
    )
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
    else:
        click.echo(
            f"RMSE {result['rmse']:.4f} stars ({result['rmse_normalized']:.4f} label units) "
            f"over {result['count']} ratings; unknown users {result['unknown_users']}, "
            f"unknown movies {result['unknown_movies']}"
        )
