"""``batchrank``: the command group, lazy command loading and the exit-code mapping.

Commands are imported only when invoked, so ``batchrank --help`` stays fast and never imports
Keras, JAX or TensorFlow.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from batchrank import __version__
from batchrank.errors import EXIT_CODES, BatchrankError

# name -> (module, short help). Short help lives here so `--help` imports no command module.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("batchrank.cli.train", "Train a ranking model and write a model bundle."),
    "evaluate": ("batchrank.cli.evaluate", "RMSE of a model bundle on a ratings file."),
    "score": ("batchrank.cli.score", "Score candidate pairs and write top-k lists per user."),
    "run": ("batchrank.cli.run", "Run a job file (train if needed, then score)."),
    "validate": ("batchrank.cli.validate", "Check a job file, its model and inputs, without work."),
    "bench": (
        "batchrank.cli.bench",
        "Benchmark the scorer against a naive script and the ceiling.",
    ),
    "sample-data": ("batchrank.cli.sample_data", "Regenerate the synthetic sample_data/ folder."),
}

EPILOG = "Exit codes:\n\n\b\n" + "\n".join(f"  {code}  {text}" for code, text in EXIT_CODES.items())


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


def fail(err: BatchrankError) -> None:
    """Print one error line and exit with the error's code."""
    click.echo(f"batchrank: error: {err}", err=True)
    sys.exit(err.exit_code)


def main(argv: list[str] | None = None) -> Any:
    """Console-script entry point: map batchrank errors to exit codes, never a traceback."""
    try:
        return cli.main(args=argv, prog_name="batchrank", standalone_mode=False)
    except BatchrankError as err:
        fail(err)
    except click.exceptions.Abort:
        click.echo("batchrank: aborted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        click.echo("batchrank: interrupted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    return None


if __name__ == "__main__":  # pragma: no cover
    main()
