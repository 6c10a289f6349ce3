"""``batchrank import``: a Keras model trained elsewhere becomes a bundle (docs/byom.md)."""

from __future__ import annotations

from pathlib import Path

import click

from batchrank.cli.logging_options import log_format_option
from batchrank.cli.options import local_path, parse_scale
from batchrank.text import printable


def _parse_inputs(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, str]:
    names = [n.strip() for n in value.split(",")]
    if len(names) != 2 or not all(names) or names[0] == names[1]:
        raise click.BadParameter(f"expected USER,ITEM input names; received {value!r}")
    return names[0], names[1]


@click.command("import")
@click.option("--keras", "keras_file", required=True, callback=local_path, help=".keras file.")
@click.option("--out", required=True, callback=local_path, help="Bundle folder to write.")
@click.option(
    "--users", required=True, callback=local_path, help="CSV/Parquet of the user ids it covers."
)
@click.option(
    "--items",
    required=True,
    callback=local_path,
    help="Item ids it covers (titles too where given): CSV/Parquet, u.item, MovieLens folder/zip.",
)
@click.option(
    "--ids",
    type=click.Choice(["index", "vocabulary"]),
    default="index",
    show_default=True,
    help="index: the id is the embedding row; vocabulary: row r+1 holds the r-th listed id.",
)
@click.option(
    "--rating-scale",
    callback=parse_scale,
    default="1,5",
    show_default=True,
    help="MIN,MAX: labels are (rating - MIN) / (MAX - MIN).",
)
@click.option(
    "--inputs",
    callback=_parse_inputs,
    default="user_id,movie_id",
    show_default=True,
    help="The model's user and item input names.",
)
@click.option(
    "--custom-objects",
    multiple=True,
    metavar="MODULE:CLASS",
    help="A class the model file needs (repeatable); imported from installed packages or here.",
)
@click.option(
    "--predictor",
    type=click.Choice(["auto", "folded", "generic"]),
    default="auto",
    show_default=True,
    help="auto folds a model of the tutorial's shape, else runs it as it is.",
)
@click.option("--user-col", default="user_id", show_default=True, help="Column of user ids.")
@click.option("--item-col", default="movie_id", show_default=True, help="Column of item ids.")
@click.option("--title-col", default="title", show_default=True, help="Column of titles.")
@log_format_option
def command(
    keras_file: Path,
    out: Path,
    users: Path,
    items: Path,
    ids: str,
    rating_scale: tuple[float, float],
    inputs: tuple[str, str],
    custom_objects: tuple[str, ...],
    predictor: str,
    user_col: str,
    item_col: str,
    title_col: str,
) -> None:
    """Import a Keras ranking model into a model bundle at OUT."""
    from batchrank.importer import bundle_from_keras, load_keras_model
    from batchrank.sources import Columns, load_ids, load_item_ids

    user_ids = load_ids(users, user_col, "users")
    item_ids, titles = load_item_ids(items, Columns(item=item_col, title=title_col))
    model = load_keras_model(keras_file, custom_objects)
    bundle_from_keras(
        model,
        out,
        user_ids=user_ids,
        item_ids=item_ids,
        ids=ids,  # type: ignore[arg-type]
        inputs=inputs,
        rating_scale=rating_scale,
        titles=titles,
        predictor=predictor,  # type: ignore[arg-type]
        source=str(keras_file),
    )
    meta_path = out / "metadata.json"
    import json

    path = json.loads(meta_path.read_text())["imported"]["predictor"]
    click.echo(f"bundle written to {printable(out)} ({path} predictor)")
