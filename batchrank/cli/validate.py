"""``batchrank validate JOB.toml``: check a job without running it."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from batchrank.cli.logging_options import current_format, log_format_option
from batchrank.cli.run import SET_HELP
from batchrank.text import printable

log = logging.getLogger("batchrank.jobs")


@click.command("validate")
@click.argument("job_file", metavar="JOB.toml", type=click.Path(path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help=SET_HELP)
@click.option(
    "--date", "date_text", metavar="YYYY-MM-DD", help="Run date, fills {date} (default: today)."
)
@log_format_option
def command(job_file: Path, overrides: tuple[str, ...], date_text: str | None) -> None:
    """Check JOB.toml, its model bundle, its inputs' schemas and that its outputs are writable.

    Reads only the first rows of each input; trains, scores and writes nothing. Exits with the
    code a run would fail with (2 job file, 3 input data, 4 model, 5 output).
    """
    from batchrank.jobs.checks import Check, validate_job
    from batchrank.jobs.loader import load_job, parse_date

    date = parse_date(date_text) if date_text is not None else None
    job = load_job(job_file, overrides=overrides, date=date)
    as_json = current_format() == "json"
    for warning in job.warnings:
        if as_json:
            log.warning(warning, extra={"event": "job_warning"})
        else:
            click.echo(f"warning: {printable(warning)}", err=True)

    skipped: list[str] = []

    def report(check: Check) -> None:
        if check.warning:
            skipped.append(check.name)
            if as_json:
                log.warning("%s: %s", check.name, check.detail, extra={"event": "validate_warning"})
            else:
                click.echo(f"warning: {check.name}: {printable(check.detail)}", err=True)
            click.echo(f"--  {check.name:<12}{printable(check.detail)}")
        else:
            click.echo(f"ok  {check.name:<12}{printable(check.detail)}")

    validate_job(job, report)
    note = f" except {', '.join(skipped)} (not checked, see the warning)" if skipped else ""
    click.echo(f"{printable(job_file)}: valid{note}; nothing was run")
