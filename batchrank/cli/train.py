"""``batchrank train``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from batchrank.cli.logging_options import log_format_option
from batchrank.cli.options import column_options, local_path, local_path_or_source, parse_scale
from batchrank.text import printable


@click.command("train")
@click.option(
    "--ratings",
    required=True,
    callback=local_path_or_source,
    help="MovieLens folder/zip, CSV/Parquet file, or tfds:NAME.",
)
@click.option(
    "--items",
    callback=local_path,
    help="Titles: CSV/Parquet items file, u.item, or MovieLens folder/zip.",
)
@column_options
@click.option(
    "--rating-scale", callback=parse_scale, help="MIN,MAX of the ratings (default: data)."
)
@click.option(
    "--preset",
    type=click.Choice(["seed", "default", "features"]),
    help="Training preset [default: features where side features are found (feature files, "
    "or a MovieLens folder/zip with u.user, u.item), else default].",
)
@click.option(
    "--user-features",
    callback=local_path,
    help="CSV/Parquet of user side features (id column, then feature columns); --preset features.",
)
@click.option(
    "--item-features",
    callback=local_path,
    help="CSV/Parquet of movie side features (id column, then feature columns).",
)
@click.option(
    "--categorical",
    multiple=True,
    help="A feature column to treat as categories whatever it holds (repeatable).",
)
@click.option("--epochs", type=click.IntRange(min=1), help="Override the preset's epochs.")
@click.option(
    "--test-fraction",
    type=click.FloatRange(0, 1, max_open=True),
    help="Held-out share; 0 trains on every rating (default 0.2, or 0 with --test-ratings).",
)
@click.option(
    "--test-ratings",
    callback=local_path_or_source,
    help="Separate held-out ratings (any --ratings source), evaluated instead of a split.",
)
@click.option("--seed", type=int, help="Seed of the split and initialisation (default 42).")
@click.option("--out", required=True, callback=local_path, help="Bundle folder to write.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@log_format_option
def command(
    ratings: str,
    items: Path | None,
    user_col: str,
    item_col: str,
    rating_col: str,
    title_col: str,
    rating_scale: tuple[float, float] | None,
    preset: str | None,
    user_features: Path | None,
    item_features: Path | None,
    categorical: tuple[str, ...],
    epochs: int | None,
    test_fraction: float | None,
    test_ratings: str | None,
    seed: int | None,
    out: Path,
    quiet: bool,
) -> None:
    """Train a ranking model and write a model bundle to OUT."""
    from batchrank.sources import Columns
    from batchrank.training import train

    result = train(
        ratings,
        out,
        preset=preset,
        items=items,
        columns=Columns(user=user_col, item=item_col, rating=rating_col, title=title_col),
        rating_scale=rating_scale,
        epochs=epochs,
        test_fraction=test_fraction,
        seed=seed,
        # a progress bar on a terminal; one line per epoch in a redirected log (no \r noise)
        verbose=0 if quiet else (1 if sys.stdout.isatty() else 2),
        user_features=user_features,
        item_features=item_features,
        categorical=categorical,
        test_ratings=test_ratings,
    )
    m = result.metrics
    because = f" ({printable(result.chosen_because)})" if result.chosen_because else ""
    click.echo(f"preset: {result.bundle.metadata['preset']}{because}")
    if "test_rmse" not in m:
        slice_ = m.get("validation_count", 0)
        stops = result.bundle.metadata["hyperparameters"].get("patience", 0) > 0
        why = " early stopping watches" if stops else ""
        watched = f" ({slice_} of them the validation slice{why})" if slice_ else ""
        click.echo(f"no held-out test: trained on all {m['train_count']} ratings{watched}")
    else:
        where = "" if m.get("test_source", "split") == "split" else f" of {printable(test_ratings)}"
        click.echo(
            f"held-out RMSE: {m['test_rmse']:.4f} stars, {m['test_rmse_normalized']:.4f} label "
            f"units ({m['test_count']} ratings{where}; global mean: "
            f"{m['test_rmse_global_mean']:.4f} stars)"
        )
    click.echo(f"bundle written to {printable(out)}")
