"""Options shared by several commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

__all__ = ["column_options", "parse_scale"]


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
