"""``batchrank``: the command group, lazy command loading and the exit-code mapping.

Commands are imported only when invoked, so ``batchrank --help`` stays fast and never imports
Keras, JAX or TensorFlow.
"""

from __future__ import annotations

import importlib
import io
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import click

from batchrank import __version__
from batchrank.errors import EXIT_CODES, BatchrankError, Interrupted
from batchrank.fs import redact
from batchrank.text import printable

# name -> (module, short help). Short help lives here so `--help` imports no command module.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("batchrank.cli.train", "Train a ranking model and write a model bundle."),
    "import": ("batchrank.cli.import_model", "Import a Keras model trained elsewhere as a bundle."),
    "evaluate": (
        "batchrank.cli.evaluate",
        "RMSE of a model bundle; --ranking: top-k list metrics.",
    ),
    "score": ("batchrank.cli.score", "Score candidate pairs and write top-k lists per user."),
    "run": ("batchrank.cli.run", "Run a job file (train if needed, then score)."),
    "validate": ("batchrank.cli.validate", "Check a job file, its model and inputs, without work."),
    "bench": (
        "batchrank.cli.bench",
        "Benchmark the scorer against a naive script and the ceiling.",
    ),
    "publish": (
        "batchrank.cli.publish",
        "Redis generations: status, rollback, and the loader's benchmark.",
    ),
    "table": ("batchrank.cli.table", "Maintain a lake table: compact, expire old versions."),
    "sample-data": ("batchrank.cli.sample_data", "Regenerate the synthetic sample_data/ folder."),
}

EPILOG = (
    "Exit codes:\n\n\b\n"
    + "\n".join(f"  {code}  {text}" for code, text in EXIT_CODES.items())
    + "\n\nOn SIGTERM, SIGINT or SIGHUP a command stops, removes its temporary files, releases "
    "its lock and exits with 128 + the signal's number; a second signal ends it at once."
)

STOP_SIGNALS = tuple(
    s for s in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", None)) if s is not None
)
"""Signals turned into :class:`batchrank.errors.Interrupted`."""


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    # A second signal while the first unwinds (cleanup that hangs) ends the process at once.
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_DFL)
    raise Interrupted(signum)


@contextmanager
def stop_signals_raise() -> Iterator[None]:
    """Within the block, SIGTERM / SIGINT / SIGHUP raise :class:`Interrupted` in the main thread.

    The exception unwinds the stack like any other, so ``finally`` blocks and the writers'
    discard paths remove temporary files and the job lock is released. Outside the main thread
    (an embedding application) nothing is installed.
    """
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    for s in STOP_SIGNALS:
        signal.signal(s, _raise_interrupted)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class LazyGroup(click.Group):
    """A group whose commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module = importlib.import_module(entry[0])
        command: click.Command = module.command
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_) for name, (_, help_) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="batchrank")
def cli() -> None:
    """batchrank: offline batch scoring for recommendation ranking models.

    Train the Keras ranking model of the Keras Recommenders tutorial, then score large files of
    user-candidate pairs into ranked top-k lists per user, with titles and 0-5 stars.
    """


def fail(err: BatchrankError | Interrupted) -> None:
    """Print one error line (control characters escaped) and exit with the error's code."""
    click.echo(f"batchrank: error: {printable(redact(str(err)))}", err=True)
    sys.exit(err.exit_code)


def _show_click_error(err: click.ClickException) -> None:
    """Click's usage error text, with control characters from the arguments escaped."""
    buffer = io.StringIO()
    err.show(file=buffer)
    click.echo(printable(buffer.getvalue().rstrip("\n"), keep_newlines=True), err=True)


def main(argv: list[str] | None = None) -> Any:
    """Console-script entry point: map batchrank errors to exit codes, never a traceback."""
    try:
        with stop_signals_raise():
            return cli.main(args=argv, prog_name="batchrank", standalone_mode=False)
    except Interrupted as err:
        fail(err)
    except BatchrankError as err:
        fail(err)
    except click.exceptions.Abort:
        click.echo("batchrank: aborted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        _show_click_error(err)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        click.echo("batchrank: interrupted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    return None


if __name__ == "__main__":  # pragma: no cover
    main()
