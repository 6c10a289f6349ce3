"""``batchrank validate JOB.toml``: check a job without running it."""

from __future__ import annotations

from pathlib import Path

import click

from batchrank.cli.run import SET_HELP


@click.command("validate")
@click.argument("job_file", metavar="JOB.toml", type=click.Path(path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help=SET_HELP)
@click.option(
    "--date", "date_text", metavar="YYYY-MM-DD", help="Run date, fills {date} (default: today)."
)
def command(job_file: Path, overrides: tuple[str, ...], date_text: str | None) -> None:
    """Check JOB.toml, its model bundle, its inputs' schemas and that its outputs are writable.

    Reads only the first rows of each input; trains, scores and writes nothing. Exits with the
    code a run would fail with (2 job file, 3 input data, 4 model, 5 output).
    """
    from batchrank.jobs.checks import Check, validate_job
    from batchrank.jobs.loader import load_job, parse_date

    date = parse_date(date_text) if date_text is not None else None
    job = load_job(job_file, overrides=overrides, date=date)
    for warning in job.warnings:
        click.echo(f"warning: {warning}", err=True)

    def report(check: Check) -> None:
        click.echo(f"ok  {check.name:<12}{check.detail}")

    validate_job(job, report)
    click.echo(f"{job_file}: valid; nothing was run")
