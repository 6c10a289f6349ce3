"""``batchrank evaluate``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from batchrank.cli.logging_options import log_format_option
from batchrank.cli.options import column_options, local_path
from batchrank.errors import ConfigError

if TYPE_CHECKING:
    from batchrank.sources import Columns


@click.command("evaluate")
@click.option(
    "--model", required=True, type=click.Path(path_type=Path), help="Model bundle folder."
)
@click.option(
    "--ratings", required=True, help="MovieLens folder/zip, CSV/Parquet file, or tfds:NAME."
)
@column_options
@click.option(
    "--ranking",
    is_flag=True,
    help="Top-k list metrics (NDCG, recall, ...) beside most-popular and random baselines.",
)
@click.option(
    "--exclude",
    multiple=True,
    help="--ranking: training interactions (files, folders, globs; repeatable), never listed.",
)
@click.option("--k", "k", type=click.IntRange(1, 10_000), default=10, show_default=True)
@click.option(
    "--export",
    callback=local_path,
    help="--ranking: evaluate this existing top-k export instead of scoring the model.",
)
@click.option(
    "--relevance",
    type=float,
    help="--ranking: a rating at least this is relevant (default 4 on 1-5, scaled).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random baseline seed.")
@click.option(
    "--plot", callback=local_path, help="--ranking: draw NDCG@k and Recall@k against k (PNG)."
)
@click.option(
    "--chunk-users",
    type=click.IntRange(min=1),
    default=16_384,
    show_default=True,
    help="--ranking: users evaluated at a time (memory; the figures do not depend on it).",
)
@click.option(
    "--memory-budget-mb",
    type=click.FloatRange(min=0, min_open=True),
    default=1024.0,
    show_default=True,
    help="--ranking: MiB of training pairs held in memory before they spill to disk.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@log_format_option
def command(
    model: Path,
    ratings: str,
    user_col: str,
    item_col: str,
    rating_col: str,
    title_col: str,
    ranking: bool,
    exclude: tuple[str, ...],
    k: int,
    export: Path | None,
    relevance: float | None,
    seed: int,
    plot: Path | None,
    chunk_users: int,
    memory_budget_mb: float,
    as_json: bool,
) -> None:
    """RMSE (in stars) of a model bundle on a ratings file; with --ranking, top-k metrics."""
    from batchrank.sources import Columns

    columns = Columns(user=user_col, item=item_col, rating=rating_col, title=title_col)
    if not ranking:
        flags = (("--exclude", exclude), ("--export", export), ("--plot", plot))
        given = [f for f, v in flags if v]
        if given:
            raise ConfigError(f"{given[0]} needs --ranking")
        _rmse(model, ratings, columns, as_json)
        return
    from batchrank.metrics.protocol import evaluate_ranking, metrics_table

    result = evaluate_ranking(
        model,
        ratings,
        exclude=exclude,
        k=k,
        export=export,
        columns=columns,
        threshold=relevance,
        seed=seed,
        curve_k=max(k, 20) if plot else None,
        chunk_users=chunk_users,
        memory_budget_mb=memory_budget_mb,
    )
    if plot:
        from batchrank.metrics.plot import plot_curves

        plot_curves(result, plot, title=f"{Path(model).name}: {result['users']} users")
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
        return
    click.echo(metrics_table(result))
    click.echo(
        f"{result['users']} users with a relevant held-out rating ({result['relevance']}); "
        f"{result['users_without_relevant']} users without one and {result['unknown_users']} "
        f"users unknown to the model not counted; catalogue {result['catalogue']} movies"
    )


def _rmse(model: Path, ratings: str, columns: Columns, as_json: bool) -> None:
    from batchrank.evaluation import evaluate

    result = evaluate(model, ratings, columns=columns)
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
    else:
        click.echo(
            f"RMSE {result['rmse']:.4f} stars ({result['rmse_normalized']:.4f} label units) "
            f"over {result['count']} ratings; unknown users {result['unknown_users']}, "
            f"unknown movies {result['unknown_movies']}"
        )
