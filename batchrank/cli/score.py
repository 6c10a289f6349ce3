"""``batchrank score``."""

from __future__ import annotations

import json
from typing import Any

import click

from batchrank.cli.logging_options import log_format_option
from batchrank.cli.options import flag_named, spec_options
from batchrank.errors import ConfigError
from batchrank.options import OptionError
from batchrank.scoring.spec import SCORE_OPTIONS, ScoreSpec
from batchrank.text import printable


@click.command("score")
@log_format_option
@spec_options(SCORE_OPTIONS, "score")
@click.option("--quiet", is_flag=True, help="No progress bar or log lines.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON on stdout.")
def command(quiet: bool, as_json: bool, **options: Any) -> None:
    """Score candidate pairs and write ranked top-k lists per user, with titles and stars."""
    from batchrank.scoring.api import score

    try:
        spec = ScoreSpec(**options, progress="none" if quiet else "auto")
    except OptionError as e:
        raise ConfigError(flag_named(e)) from None
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
            f"users to {printable(str(spec.out))}"
            + (f" ({manifest['output']['parts']} part files)" if spec.max_rows_per_file else ""),
            err=True,
        )
        click.echo(f"manifest: {printable(str(spec.manifest_path))}", err=True)
