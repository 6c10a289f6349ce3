"""``batchrank bench``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from batchrank.bench import DEFAULT_CANDIDATES, DEFAULT_MOVIES, VARIANTS
from batchrank.bench.variants import SWEEP

_VARIANTS = ",".join(VARIANTS)


@click.command("bench")
@click.option(
    "--pairs",
    "n_pairs",
    default=5_000_000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Pairs in the synthetic input; the realistic scenarios' users scale with it "
    "(pairs / --candidates).",
)
@click.option(
    "--scenario",
    "scenarios",
    default="grouped,shuffled",
    show_default=True,
    help="Comma-separated scenarios: grouped (U users × C distinct candidates from M movies, "
    "rows grouped by user), shuffled (the same, rows shuffled), repeated (943 × 1,682 "
    "catalogue, pairs repeating), all (--pairs all on that catalogue).",
)
@click.option(
    "--candidates",
    default=DEFAULT_CANDIDATES,
    show_default=True,
    type=click.IntRange(min=1),
    help="Candidates per user of grouped and shuffled.",
)
@click.option(
    "--movies",
    default=DEFAULT_MOVIES,
    show_default=True,
    type=click.IntRange(min=1),
    help="Catalogue size of grouped and shuffled.",
)
@click.option(
    "--model",
    type=click.Path(file_okay=False, path_type=Path),
    help="Existing model bundle for repeated and all (default: train the seed preset for 1 epoch).",
)
@click.option(
    "--ratings",
    type=click.Path(exists=True, path_type=Path),
    help="Train the seed preset on these ratings instead of synthetic ones.",
)
@click.option("--top-k", default=10, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    help="batchrank's batch size (default: the scorer's); added to the ceiling's sweep.",
)
@click.option(
    "--chunk-rows",
    type=click.IntRange(min=1),
    help="batchrank's rows per chunk (default: the scorer's).",
)
@click.option(
    "--variants", default=_VARIANTS, show_default=True, help="Comma-separated variants to run."
)
@click.option(
    "--sweep",
    default=",".join(str(b) for b in SWEEP),
    show_default=True,
    help="Batch sizes the ceiling tries.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the synthetic data.")
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Work folder; inputs and the model are cached there by name and kept "
    "(default: a temporary folder, deleted unless --keep).",
)
@click.option("--keep", is_flag=True, help="Keep the work folder and the variants' outputs.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
def command(
    n_pairs: int,
    scenarios: str,
    candidates: int,
    movies: int,
    model: Path | None,
    ratings: Path | None,
    top_k: int,
    batch_size: int | None,
    chunk_rows: int | None,
    variants: str,
    sweep: str,
    seed: int,
    work_dir: Path | None,
    keep: bool,
    as_json: bool,
) -> None:
    """Benchmark the scorer against a naive script and the model's in-memory ceiling.

    Per scenario, on one synthetic pairs file (written to Parquet first, reused from
    --work-dir when it exists) and a model whose vocabularies match it, each variant runs in
    its own process, one at a time: the ceiling (the jitted model over index pairs in memory,
    unfolded and folded, best of a batch-size sweep), naive (polars + model.predict + sort, as
    in the tutorial), batchrank score end to end (and with --precision bfloat16, compared with
    float32 on the same pairs); then the start-up times of `batchrank --help` and of scoring
    1,000 pairs. Prints pairs/s, peak RSS and wall seconds per variant and the ratios, each row
    labelled with its scenario.
    """
    from batchrank.bench.harness import BenchOptions, run_bench
    from batchrank.bench.report import render_table
    from batchrank.errors import ConfigError

    try:
        sweep_sizes = tuple(int(b) for b in sweep.split(",") if b.strip())
    except ValueError:
        raise ConfigError(f"--sweep must be comma-separated integers; received {sweep!r}") from None
    if not sweep_sizes or min(sweep_sizes) < 1:
        raise ConfigError(f"--sweep must be positive integers; received {sweep!r}")
    opts = BenchOptions(
        pairs=n_pairs,
        scenarios=tuple(x.strip() for x in scenarios.split(",") if x.strip()),
        candidates=candidates,
        movies=movies,
        model=model,
        ratings=ratings,
        top_k=top_k,
        batch_size=batch_size,
        chunk_rows=chunk_rows,
        variants=tuple(v.strip() for v in variants.split(",") if v.strip()),
        work_dir=work_dir,
        keep=keep,
        seed=seed,
        sweep=sweep_sizes,
    )
    result = run_bench(opts, say=lambda m: click.echo(f"bench: {m}", err=True))
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
    else:
        click.echo(render_table(result))
