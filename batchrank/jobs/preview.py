"""A few users' lists from a written output, for a person at a terminal."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from batchrank.fs import ObjectPath, is_remote

__all__ = ["UserList", "preview"]


@dataclass(frozen=True, kw_only=True)
class UserList:
    """One user's ranked recommendations."""

    user_id: Any
    """The user's id."""
    rows: list[dict[str, Any]]
    """``rank``, ``movie_id``, ``title``, ``stars`` and ``score`` of each recommendation."""


def _scan(path: Path, fmt: str, rows: int) -> pl.LazyFrame:
    if path.is_dir():  # a folder of parts: read in order, as far as the head needs
        from batchrank.scoring.parts import list_parts

        return pl.concat([_scan(p, fmt, rows) for p in list_parts(path)])
    if is_remote(path):
        return _scan_remote(path, fmt, rows)
    if fmt == "parquet":
        return pl.scan_parquet(path)
    if fmt == "csv":
        return pl.scan_csv(path)
    return pl.scan_ndjson(path)


def _scan_remote(path: ObjectPath, fmt: str, rows: int) -> pl.LazyFrame:
    """An object's first rows: a Parquet object's first batch by ranged reads; a text
    output is fetched whole (polars cannot stream from an object store handle)."""
    import pyarrow.parquet as pq

    if fmt == "parquet":
        with path.open("rb") as f:
            batch = next(pq.ParquetFile(f).iter_batches(batch_size=max(rows, 1)), None)
            table = pa.Table.from_batches([batch]) if batch is not None else pa.table({})
        return pl.from_arrow(table).lazy()  # type: ignore[union-attr]
    data = io.BytesIO(path.read_bytes())
    return (pl.read_csv(data) if fmt == "csv" else pl.read_ndjson(data)).lazy()


def preview(path: Path, *, fmt: str, layout: str, users: int, top_k: int) -> list[UserList]:
    """The first ``users`` users' lists of an output (a file or a folder of parts), in order.

    Reads only the first rows, so it stays cheap on a large output.
    """
    if users <= 0:
        return []
    frame = _scan(path, fmt, users * top_k)
    if layout == "nested":
        frame = frame.head(users).explode("items").unnest("items")
    else:
        frame = frame.head(users * top_k)
    df = frame.collect()
    out: list[UserList] = []
    for (user,), part in df.group_by("user_id", maintain_order=True):
        out.append(UserList(user_id=user, rows=part.sort("rank").to_dicts()))
    return out[:users]
