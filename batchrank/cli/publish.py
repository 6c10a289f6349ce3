"""``batchrank publish``: the Redis generations of a prefix (status, rollback) and the loader's
benchmark."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from batchrank.cli.logging_options import log_format_option
from batchrank.errors import ConfigError
from batchrank.text import printable

_URL_HELP = (
    "redis://[user:password@]host:port/db (rediss:// for TLS); default: the job's "
    "[publish.redis] url, or $BATCHRANK_PUBLISH_REDIS_URL."
)


def _target(url: str | None, job_file: Path | None, prefix: str | None) -> Any:
    """The target and its key prefix from a URL or a job file's ``[publish.redis]``."""
    from dataclasses import replace

    from batchrank.sinks.redis import target_of

    if job_file is not None:
        from batchrank.jobs.loader import load_job

        job = load_job(job_file)
        target = job.publish.redis
        if target is None:
            raise ConfigError(f"{job_file}: the job has no [publish.redis] section")
        if url is not None:
            target = replace(target_of(url), prefix=target.prefix)
    elif url is None:
        raise ConfigError("give a redis:// URL (or --job JOB.toml with a [publish.redis] section)")
    else:
        target = target_of(url, where="URL")
    if prefix is not None:
        target = replace(target, prefix=prefix)
    if "{job}" in target.prefix:
        raise ConfigError(
            f"key prefix {target.prefix!r} names {{job}}: give --prefix (for instance "
            "batchrank:sample:) or --job JOB.toml"
        )
    return target


def _common(fn: Any) -> Any:
    fn = click.option("--prefix", help="Key prefix (default: the URL's ?prefix= or the job's).")(fn)
    fn = click.option(
        "--job",
        "job_file",
        type=click.Path(path_type=Path, dir_okay=False),
        help="Take the URL and prefix from this job file's [publish.redis].",
    )(fn)
    fn = click.argument("url", required=False, envvar="BATCHRANK_PUBLISH_REDIS_URL")(fn)
    return log_format_option(fn)


@click.group("publish")
def command() -> None:
    (
        """Redis generations published by `score --publish` and job runs: status, rollback, bench.

    URL: """
        + _URL_HELP
    )


@command.command("status")
@_common
def status_command(url: str | None, job_file: Path | None, prefix: str | None) -> None:
    """Print the current generation, the kept ones and their key counts (JSON)."""
    from batchrank.sinks.redis import status

    target = _target(url, job_file, prefix)
    click.echo(json.dumps(status(target, target.prefix), indent=2, sort_keys=True))


@command.command("rollback")
@_common
@click.option(
    "--to", "to", metavar="GENERATION", help="Generation to point at (default: the one before)."
)
def rollback_command(
    url: str | None, job_file: Path | None, prefix: str | None, to: str | None
) -> None:
    """Point {prefix}current back at the previous kept generation (or --to GENERATION)."""
    from batchrank.sinks.redis import rollback

    target = _target(url, job_file, prefix)
    before, now = rollback(target, target.prefix, to)
    click.echo(
        f"{printable(target.display)} {printable(target.prefix)}current: "
        f"{printable(str(before))} -> {printable(now)}",
        err=True,
    )


@command.command("bench")
@click.option("--users", default=200_000, show_default=True, type=click.IntRange(min=1000))
@click.option("--items", default=10, show_default=True, type=click.IntRange(min=1, max=1000))
@click.option("--repeat", default=2, show_default=True, type=click.IntRange(min=1, max=10))
@click.option(
    "--cluster",
    default=0,
    show_default=True,
    type=click.IntRange(min=0, max=16),
    metavar="PRIMARIES",
    help="Also load a local Redis Cluster of this many primaries (needs redis-cli).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON on stdout.")
def bench_command(users: int, items: int, repeat: int, cluster: int, as_json: bool) -> None:
    """Users/s of batchrank's loader against a plain redis-py pipeline loop writing the same
    JSON values, side by side against one local redis-server this command starts (and the
    loader on a local Redis Cluster, with --cluster)."""
    from batchrank.sinks.redis.bench import run_bench

    if cluster in (1, 2):
        msg = (
            f"--cluster: redis-cli --cluster create needs at least 3 primaries; received {cluster}"
        )
        raise ConfigError(msg)
    result = run_bench(users=users, items=items, repeat=repeat, cluster=cluster)
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
        return
    click.echo(
        f"{users:,} users x {items} items, {result['value_mb']:.0f} MB of JSON values, "
        f"best of {repeat}:\n"
        f"  batchrank loader   {result['batchrank_users_per_s']:>12,.0f} users/s\n"
        f"  redis-py pipeline  {result['redis_py_users_per_s']:>12,.0f} users/s\n"
        f"  ratio              {result['ratio']:>12.2f}x"
    )
    if cluster:
        click.echo(
            f"  batchrank loader on a {cluster}-primary local cluster "
            f"{result['cluster_users_per_s']:,.0f} users/s"
        )
