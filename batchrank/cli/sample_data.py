"""``batchrank sample-data``."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("sample-data")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("sample_data"),
    show_default=True,
    help="Folder to write the files into (created if missing).",
)
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of every random draw.")
def command(out: Path, seed: int) -> None:
    """Regenerate the synthetic sample data (ratings, titles, candidates) into OUT.

    The same seed gives byte-identical files.
    """
    from batchrank.sample_data import FILES, generate

    counts = generate(out, seed=seed)
    for name in FILES:
        click.echo(f"wrote {out / name} ({(out / name).stat().st_size:,} bytes)")
    click.echo(
        f"{counts['ratings']:,} ratings by {counts['users']} users of {counts['movies']} movies; "
        f"{counts['candidates']:,} candidate pairs ({counts['candidate_duplicates']} duplicates, "
        f"{counts['candidate_unknown']} with unknown ids); {counts['bytes']:,} bytes in all"
    )
