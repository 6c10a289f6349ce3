"""``batchrank run JOB.toml``: run a job file, for cron and orchestrators."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from batchrank.cli.logging_options import current_format, log_format_option
from batchrank.text import printable

if TYPE_CHECKING:
    from batchrank.jobs.runner import RunResult

SET_HELP = (
    "Override a job-file key, such as score.top_k=20; repeatable. Values are TOML "
    '(20, true, [1, 5], "text") or plain text. Wins over BATCHRANK_<SECTION>_<KEY> '
    "environment variables, which win over the file."
)


def _stars(value: float, high: float) -> str:
    full = max(0, min(round(value), round(high)))
    return "★" * full + "☆" * (max(round(high), 1) - full) if high <= 10 else ""


def _summary(result: RunResult, preview_users: int) -> None:
    from batchrank.jobs.paths import shown

    def _show(path: Path) -> str:
        return printable(shown(path))

    m: dict[str, Any] = result.manifest
    c = m["counts"]
    options = m.get("options", {})
    skipped = c["rows_skipped_unknown_user"] + c["rows_skipped_unknown_movie"]
    lines = [
        f"job {printable(result.job)}, {result.date}, run {result.run_id}"
        + (" (resumed)" if result.resumed else ""),
    ]
    if result.train_reason:
        done = "trained a new bundle" if result.trained else "skipped"
        lines.append(f"  train: {done}: {printable(result.train_reason)}")
    resume = m.get("resume", {})
    resumed = (
        f"; {resume['fragments_resumed']} of {resume['fragments']} fragments resumed"
        if resume.get("fragments_resumed")
        else ""
    )
    lines.append(
        f"  score: {c['rows_scored']:,} of {c['rows_read']:,} pairs scored ({skipped:,} unknown "
        f"skipped, {c['rows_rejected']:,} rejected); top {options.get('top_k')} for "
        f"{c['users_written']:,} users{resumed}"
    )
    click.echo("\n".join(lines))
    if preview_users > 0:
        from batchrank.jobs.preview import preview

        high = float(m.get("model", {}).get("rating_scale", [0, 5])[1])
        for user in preview(
            result.output,
            fmt=str(options.get("format")),
            layout=str(options.get("layout")),
            users=preview_users,
            top_k=int(options.get("top_k", 10)),
        ):
            click.echo(f"\ntop {len(user.rows)} for user {printable(user.user_id)}:")
            for row in user.rows:
                title = printable(row.get("title") or f"movie {row['movie_id']}")
                click.echo(
                    f"  {row['rank']:>3}. {row['stars']:4.2f} {_stars(row['stars'], high)}  {title}"
                )
        click.echo("")
    width = 10
    parts = m.get("output", {}).get("parts")
    shown_parts = f"/ (a folder of {parts} part file{'s' if parts != 1 else ''})" if parts else ""
    click.echo(f"{'output:':<{width}}{_show(result.output)}{shown_parts}")
    click.echo(f"{'manifest:':<{width}}{_show(result.manifest_path)}")
    if result.rejects is not None and result.rejects.exists():
        click.echo(f"{'rejects:':<{width}}{_show(result.rejects)}")
    if result.success is not None:
        click.echo(f"{'_SUCCESS:':<{width}}{_show(result.success)}")
    if result.latest is not None:
        target = result.latest.read_text(encoding="utf-8").strip() if result.latest.exists() else ""
        note = "" if result.latest_updated else " (kept: it names a later date)"
        click.echo(f"{'latest:':<{width}}{_show(result.latest)} -> {printable(target)}{note}")


@click.command("run")
@click.argument("job_file", metavar="JOB.toml", type=click.Path(path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help=SET_HELP)
@click.option(
    "--date", "date_text", metavar="YYYY-MM-DD", help="Run date, fills {date} (default: today)."
)
@click.option(
    "--fresh",
    is_flag=True,
    help="Discard what an interrupted run of this job and date finished; start over.",
)
@log_format_option
@click.option("--quiet", is_flag=True, help="Only warnings and errors; no progress and no summary.")
def command(
    job_file: Path,
    overrides: tuple[str, ...],
    date_text: str | None,
    fresh: bool,
    quiet: bool,
) -> None:
    """Run JOB.toml: train when its policy says so, score, publish _SUCCESS and latest.

    A second run of the same job while one runs exits at once with code 6. A run that died
    is resumed from the input fragments it had finished when started again for the same date.
    """
    from batchrank.jobs.loader import load_job, parse_date
    from batchrank.jobs.runner import run_job

    as_json = current_format() == "json"
    date = parse_date(date_text) if date_text is not None else None
    job = load_job(job_file, overrides=overrides, date=date)
    if quiet:
        progress = "none"
    elif as_json or not sys.stderr.isatty():
        progress = "log"
    else:
        progress = "auto"
    result = run_job(job, fresh=fresh, progress=progress)
    if not quiet and not as_json:
        _summary(result, job.job.preview_users)
