"""Options shared by several commands."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import click
from click.core import ParameterSource

from batchrank.errors import ConfigError
from batchrank.options import Option, OptionError, flag_of
from batchrank.uris import as_path, path_text

__all__ = [
    "column_options",
    "flag_named",
    "local_path",
    "local_path_or_source",
    "parse_scale",
    "spec_options",
]


def column_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--user-col``, ``--item-col``, ``--rating-col``, ``--title-col``."""
    for name, default, help_ in reversed(
        [
            ("--user-col", "user_id", "Column of user ids."),
            ("--item-col", "movie_id", "Column of movie ids."),
            ("--rating-col", "rating", "Column of ratings."),
            ("--title-col", "title", "Column of titles in the items file."),
        ]
    ):
        func = click.option(name, default=default, show_default=True, help=help_)(func)
    return func


def local_path(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """A path flag's value as a ``Path`` (an ``ObjectPath`` for s3://, gs://, hdfs://, abfs://).

    Use with the flag's default string type: ``click.Path`` would collapse ``s3://`` first.
    """
    if value is None:
        return None
    return as_path(value, f"--{param.name}")


def local_path_or_source(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """Like :func:`local_path`, but the text is kept (``tfds:NAME`` is a source, not a path)."""
    return None if value is None else path_text(value, f"--{param.name}")


def parse_scale(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """Parse ``MIN,MAX``."""
    if value is None:
        return None
    try:
        low, high = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected MIN,MAX such as 1,5; received {value!r}") from None
    if not high > low:
        raise click.BadParameter(f"expected MIN < MAX; received {value!r}")
    return (low, high)


class _OptionType(click.ParamType):
    """A flag's type that validates with the option's own :meth:`Option.coerce`.

    A bad value is a one-line :class:`~batchrank.errors.ConfigError` naming the flag (exit 2),
    the same check and message a job file or the Python API gets.
    """

    def __init__(self, opt: Option) -> None:
        self.opt = opt
        self.name = {"int": "INTEGER", "float": "NUMBER", "str": "TEXT", "date": "DATE"}.get(
            opt.kind, "PATH"
        )

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return _coerce(self.opt, value, param, ctx)


class _ChoiceType(click.Choice):
    """``click.Choice`` (help and completion list the choices), validated by the option."""

    def __init__(self, opt: Option) -> None:
        super().__init__(list(opt.choices))
        self.opt = opt

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return _coerce(self.opt, value, param, ctx)


def _coerce(
    opt: Option, value: Any, param: click.Parameter | None, ctx: click.Context | None
) -> Any:
    try:
        if opt.kind == "paths":  # click converts a repeated flag's values one by one
            return opt.local_path(value)
        return opt.coerce(value)
    except OptionError as e:
        name = param.name if param is not None else None
        source = ctx.get_parameter_source(name) if ctx is not None and name else None
        if param is not None and source is ParameterSource.ENVIRONMENT:
            raise ConfigError(e.named(lambda k: str(param.envvar))) from None
        raise ConfigError(flag_named(e)) from None


def flag_named(error: OptionError) -> str:
    """An option error's message with options named as flags (``--top-k``)."""
    return error.named(flag_of)


def spec_options(
    options: Sequence[Option], section: str
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Click options for every option of a spec that the command line sets, in their order.

    The flag, type (``Literal`` fields become choices), default, help and whether it is required
    or repeatable all come from the spec's fields; the command receives each value under the
    field's name. ``BATCHRANK_<SECTION>_<KEY>`` sets an option the command line does not, as
    it does for a job file's section.
    """

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for opt in reversed([o for o in options if o.scope != "run"]):
            kind: click.ParamType = _ChoiceType(opt) if opt.kind == "choice" else _OptionType(opt)
            func = click.option(
                opt.flag,
                opt.name,
                type=kind,
                required=opt.required,
                multiple=opt.kind == "paths",
                envvar=opt.envvar(section),
                show_envvar=False,
                default=None if opt.required or opt.kind == "paths" else opt.default,
                show_default=opt.default is not None,
                help=opt.doc
                + (f" Range: {opt.bounds[3:]}." if opt.bounds.startswith("in") else ""),
            )(func)
        return func

    return decorate
