"""A few users' lists from a written output, for a person at a terminal."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

__all__ = ["UserList", "preview"]


@dataclass(frozen=True, kw_only=True)
class UserList:
    """One user's ranked recommendations."""

    user_id: Any
    """The user's id."""
    rows: list[dict[str, Any]]
    """``rank``, ``movie_id``, ``title``, ``stars`` and ``score`` of each recommendation."""


def _scan(path: Path, fmt: str) -> pl.LazyFrame:
    if path.is_dir():  # a folder of parts: read in order, as far as the head needs
        from batchrank.scoring.parts import list_parts

        return pl.concat([_scan(p, fmt) for p in list_parts(path)])
    if fmt == "parquet":
        return pl.scan_parquet(path)
    if fmt == "csv":
        return pl.scan_csv(path)
    return pl.scan_ndjson(path)


def preview(path: Path, *, fmt: str, layout: str, users: int, top_k: int) -> list[UserList]:
    """The first ``users`` users' lists of an output (a file or a folder of parts), in order.

    Reads only the first rows, so it stays cheap on a large output.
    """
    if users <= 0:
        return []
    frame = _scan(path, fmt)
    if layout == "nested":
        frame = frame.head(users).explode("items").unnest("items")
    else:
        frame = frame.head(users * top_k)
    df = frame.collect()
    out: list[UserList] = []
    for (user,), part in df.group_by("user_id", maintain_order=True):
        out.append(UserList(user_id=user, rows=part.sort("rank").to_dicts()))
    return out[:users]
