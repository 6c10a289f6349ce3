"""Training data sources, all loaded into one Arrow schema.

Sources:

1. a MovieLens 100K folder or ``.zip`` (``u.data`` and ``u.item``);
2. generic ratings files, CSV or Parquet, with configurable column names, and an optional items
   file for titles;
3. ``tfds:movielens/100k-ratings`` through tensorflow-datasets (imported lazily, only here).

Whatever the source, :func:`load_ratings` returns a :class:`RatingsData` whose ``ratings`` table
has columns ``user_id``, ``movie_id`` (both int64 or both-or-either string) and ``rating``
(float64), and whose ``items`` table, when known, has ``movie_id`` and ``title``.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from batchrank.errors import DataError, first_line
from batchrank.fs import ObjectPath, is_remote, local_or_remote
from batchrank.scoring.schema import MOVIE_ID, RATING, TITLE, USER_ID
from batchrank.store_errors import remote_reason
from batchrank.vocab import coerce_ids, id_kind_of

__all__ = [
    "Columns",
    "RatingsData",
    "fingerprint_table",
    "load_ids",
    "load_item_ids",
    "load_items",
    "load_ratings",
    "normalise_ratings",
]

USER, ITEM = USER_ID, MOVIE_ID


@dataclass(frozen=True, kw_only=True)
class Columns:
    """Column names in the user's files."""

    user: str = USER
    """Column of user ids."""
    item: str = ITEM
    """Column of movie ids."""
    rating: str = RATING
    """Column of ratings."""
    title: str = TITLE
    """Column of titles in an items file."""


@dataclass(frozen=True)
class RatingsData:
    """Ratings (and titles where known) in batchrank's schema."""

    ratings: pa.Table
    items: pa.Table | None
    source: str

    @property
    def fingerprint(self) -> str:
        """sha256 of the ratings' content (order included)."""
        return fingerprint_table(self.ratings)


def fingerprint_table(table: pa.Table) -> str:
    """A content hash of a table: sha256 over its Arrow IPC stream."""
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table.combine_chunks())
    return "sha256:" + hashlib.sha256(sink.getvalue()).hexdigest()


def _read_frame(path: Path, *, what: str) -> pl.DataFrame:
    path = local_or_remote(Path(path))
    if is_remote(path):
        return _read_remote_frame(path, what=what)
    return _read_local_frame(path, path, what=what)


def _read_remote_frame(path: ObjectPath, *, what: str) -> pl.DataFrame:
    """An object read whole (ratings and items are loaded whole anyway), then parsed."""
    try:
        if not path.exists():
            raise DataError(f"{path.display()}: {what} file not found")
        with path.open("rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"{path.display()}: cannot read {what} file ({remote_reason(e)})") from e
    return _read_local_frame(path, io.BytesIO(raw), what=what)


def _read_local_frame(path: Path, source: Path | io.BytesIO, *, what: str) -> pl.DataFrame:
    if isinstance(source, Path) and not path.exists():
        raise DataError(f"{path}: {what} file not found")
    if isinstance(source, Path) and path.is_dir():
        raise DataError(f"{path}: is a folder; expected a file (.csv or .parquet)")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            df = pl.read_parquet(source)
        elif suffix in (".csv", ".tsv", ".txt"):
            df = pl.read_csv(
                source, separator="\t" if suffix == ".tsv" else ",", infer_schema_length=10000
            )
        else:
            raise DataError(
                f"{path}: unknown {what} file type {suffix!r}; expected .csv or .parquet"
            )
    except DataError:
        raise
    except pl.exceptions.NoDataError:
        raise DataError(f"{path}: {what} file is empty") from None
    except Exception as e:  # polars and pyarrow raise many types for corrupt files
        first = first_line(e)
        raise DataError(f"{path}: cannot read {what} file: {first}") from e
    if df.height == 0:
        raise DataError(f"{path}: {what} file has no rows")
    return df


def _require(df: pl.DataFrame, cols: list[str], path: object, what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        found = ", ".join(f"`{c}`" for c in df.columns)
        miss = ", ".join(f"`{c}`" for c in missing)
        raise DataError(f"{path}: {what} column {miss} missing; found {found}")


def normalise_ratings(table: pa.Table, where: str, *, first_row: int = 1) -> pa.Table:
    """Check ids and ratings and return the canonical schema.

    ``first_row``: the file's row number of the table's first row (a chunk of a file), for
    messages.
    """
    out = {}
    for col in (USER, ITEM):
        arr = table.column(col).combine_chunks()
        kind = id_kind_of(arr, where=f"{where}: column `{col}`")
        nulls = arr.null_count
        if nulls:
            row = pc.index(pc.is_null(arr), True).as_py()
            raise DataError(
                f"{where}: column `{col}` has {nulls} null ids (first at row {row + first_row})"
            )
        cast, _ = coerce_ids(arr, kind, where=f"{where}: column `{col}`")
        out[col] = cast
    rating = table.column(RATING).combine_chunks()
    if not (pa.types.is_integer(rating.type) or pa.types.is_floating(rating.type)):
        as_text = pc.cast(rating, pa.string())
        numeric = pc.match_substring_regex(
            pc.utf8_trim_whitespace(as_text), r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
        )
        bad = pc.invert(pc.fill_null(numeric, False))
        if pc.any(bad).as_py():
            row = pc.index(bad, True).as_py()
            raise DataError(
                f"{where}: column `{RATING}` must be numeric; row {row + first_row} has "
                f"{as_text[row].as_py()!r}"
            )
        rating = pc.cast(pc.utf8_trim_whitespace(as_text), pa.float64())
    rating = pc.cast(rating, pa.float64())
    if rating.null_count:
        row = pc.index(pc.is_null(rating), True).as_py()
        raise DataError(f"{where}: column `{RATING}` has a missing rating at row {row + first_row}")
    if pc.any(pc.is_nan(rating)).as_py():
        row = pc.index(pc.is_nan(rating), True).as_py()
        raise DataError(f"{where}: column `{RATING}` has NaN at row {row + first_row}")
    infinite = pc.invert(pc.is_finite(rating))
    if pc.any(infinite).as_py():
        row = pc.index(infinite, True).as_py()
        raise DataError(
            f"{where}: column `{RATING}` has {rating[row].as_py()} at row {row + first_row}; "
            "expected a finite number"
        )
    out[RATING] = rating
    return pa.table(out)


def _normalise_items(table: pa.Table, where: str) -> pa.Table:
    ids = table.column(ITEM).combine_chunks()
    kind = id_kind_of(ids, where=f"{where}: column `{ITEM}`")
    ids, _ = coerce_ids(ids, kind, where=f"{where}: column `{ITEM}`")
    titles = pc.cast(table.column(TITLE).combine_chunks(), pa.string())
    items = pa.table({ITEM: ids, TITLE: titles}).filter(pc.is_valid(ids))
    # one title per movie: the first one given
    frame = pl.DataFrame(items).unique(subset=ITEM, keep="first", maintain_order=True)
    return frame.to_arrow()


def load_items(source: str | Path, columns: Columns = Columns()) -> pa.Table:
    """Titles (``movie_id``, ``title``) from any items source, in batchrank's schema.

    The one resolver behind ``train --items``, ``score --items`` and job files' ``items``:

    - a MovieLens folder (its ``u.item``) or ``.zip`` (the ``u.item`` beside its ``u.data``);
    - a ``u.item`` file (any name ending in ``.item``): ``id|title|...``, ISO-8859-1;
    - a CSV or Parquet file with the ``columns.item`` and ``columns.title`` columns.

    Raises:
        DataError: one line naming the source and what was expected.
    """
    path = local_or_remote(Path(source))  # an object-store URI stays one
    if not path.exists():
        raise DataError(f"{path}: items file not found")
    if path.is_dir():
        item_path = path / "u.item"
        if not item_path.is_file():
            raise DataError(
                f"{path}: is a folder; expected a MovieLens folder (with u.item), a .zip, "
                "a u.item, .csv or .parquet items file"
            )
        return _normalise_items(_parse_u_item(_read_bytes(item_path), str(item_path)), str(path))
    suffix = path.suffix.lower()
    if suffix == ".zip":
        return _normalise_items(_zip_items(path), str(path))
    if suffix == ".item":
        return _normalise_items(_parse_u_item(_read_bytes(path), str(path)), str(path))
    df = _read_frame(path, what="items")
    _require(df, [columns.item, columns.title], path, "items")
    table = df.select(pl.col(columns.item).alias(ITEM), pl.col(columns.title).alias(TITLE))
    return _normalise_items(table.to_arrow(), str(path))


def load_ids(path: Path, column: str, what: str) -> pa.Array:
    """The ``column`` of a CSV or Parquet file, in file order (ids a model covers)."""
    df = _read_frame(Path(path), what=what)
    _require(df, [column], path, what)
    return df.get_column(column).to_arrow()


def load_item_ids(
    source: str | Path, columns: Columns = Columns()
) -> tuple[pa.Array, pa.Table | None]:
    """Item ids in source order, and their titles where the source has them.

    Any items source :func:`load_items` takes, or a CSV / Parquet file with only an id column.
    """
    path = local_or_remote(Path(source))
    if path.is_file() and path.suffix.lower() not in (".zip", ".item"):
        df = _read_frame(path, what="items")
        if columns.title not in df.columns:
            return load_ids(path, columns.item, "items"), None
    titles = load_items(path, columns)
    return titles.column(ITEM).combine_chunks(), titles


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read file ({e.strerror or e})") from e


@contextmanager
def _open_zip(path: Path) -> Iterator[zipfile.ZipFile]:
    """A zip archive, its read errors as one :class:`DataError` line naming it."""
    try:
        with zipfile.ZipFile(path.open("rb") if is_remote(path) else path) as zf:
            yield zf
    except zipfile.BadZipFile as e:
        raise DataError(f"{path}: corrupt zip file ({e})") from e
    except (zipfile.LargeZipFile, OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read zip file ({e})") from e


def _zip_items(path: Path) -> pa.Table:
    with _open_zip(path) as zf:
        item_name = next((n for n in zf.namelist() if n.endswith("u.item")), None)
        if item_name is None:
            raise DataError(f"{path}: zip holds no u.item; expected MovieLens 100K")
        return _parse_u_item(zf.read(item_name), f"{path}:{item_name}")


def _load_generic(path: Path, columns: Columns) -> pa.Table:
    df = _read_frame(path, what="ratings")
    _require(df, [columns.user, columns.item, columns.rating], path, "ratings")
    table = df.select(
        pl.col(columns.user).alias(USER),
        pl.col(columns.item).alias(ITEM),
        pl.col(columns.rating).alias(RATING),
    ).to_arrow()
    return normalise_ratings(table, str(path))


def _parse_u_data(raw: bytes, where: str) -> pa.Table:
    if not raw.strip():
        raise DataError(f"{where}: u.data is empty")
    try:
        df = pl.read_csv(
            io.BytesIO(raw),
            separator="\t",
            has_header=False,
            new_columns=[USER, ITEM, RATING, "timestamp"],
            schema_overrides={USER: pl.Int64, ITEM: pl.Int64, RATING: pl.Float64},
        )
    except Exception as e:
        first = first_line(e)
        raise DataError(
            f"{where}: u.data is not tab-separated integer user, item, rating, timestamp: {first}"
        ) from e
    return normalise_ratings(df.select(USER, ITEM, RATING).to_arrow(), where)


def _parse_u_item(raw: bytes, where: str) -> pa.Table:
    ids: list[int] = []
    titles: list[str] = []
    for n, line in enumerate(raw.decode("iso-8859-1").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) < 2 or not fields[0].strip().isdigit():
            raise DataError(f"{where}: u.item line {n} is not `id|title|...`")
        ids.append(int(fields[0]))
        titles.append(fields[1])
    if not ids:
        raise DataError(f"{where}: u.item holds no movies")
    return pa.table({ITEM: pa.array(ids, pa.int64()), TITLE: pa.array(titles, pa.string())})


def _load_movielens_dir(path: Path) -> RatingsData:
    data = path / "u.data"
    if not data.exists():
        raise DataError(f"{path}: not a MovieLens 100K folder (no u.data)")
    ratings = _parse_u_data(data.read_bytes(), str(data))
    item_path = path / "u.item"
    items = _parse_u_item(item_path.read_bytes(), str(item_path)) if item_path.exists() else None
    return RatingsData(ratings=ratings, items=items, source=f"movielens:{path}")


def _load_movielens_zip(path: Path) -> RatingsData:
    with _open_zip(path) as zf:
        names = zf.namelist()
        data_name = next((n for n in names if n.endswith("u.data")), None)
        if data_name is None:
            raise DataError(f"{path}: zip holds no u.data; expected MovieLens 100K")
        ratings = _parse_u_data(zf.read(data_name), f"{path}:{data_name}")
        item_name = data_name[: -len("u.data")] + "u.item"
        items = (
            _parse_u_item(zf.read(item_name), f"{path}:{item_name}") if item_name in names else None
        )
    return RatingsData(ratings=ratings, items=items, source=f"movielens-zip:{path}")


def _load_tfds(spec: str) -> RatingsData:
    from batchrank.tfds_source import load_tfds_ratings

    ratings, items = load_tfds_ratings(spec)
    return RatingsData(ratings=ratings, items=items, source=spec)


def load_ratings(
    spec: str | Path,
    *,
    columns: Columns = Columns(),
    items: str | Path | None = None,
) -> RatingsData:
    """Load ratings from any supported source.

    Args:
        spec: a MovieLens folder or zip, a CSV / Parquet ratings file, or ``tfds:NAME``.
        columns: column names of a generic ratings or items file.
        items: an items source with titles (overrides titles found in the source); anything
            :func:`load_items` takes.
    """
    text = str(spec)
    if text.startswith("tfds:"):
        data = _load_tfds(text)
    else:
        path = local_or_remote(Path(text))
        if is_remote(path):
            ratings = _load_generic(path, columns)  # a file: MovieLens folders are local
            data = RatingsData(ratings=ratings, items=None, source=path.display())
        elif not path.exists():
            raise DataError(f"{path}: ratings source not found")
        elif path.is_dir():
            data = _load_movielens_dir(path)
        elif path.suffix.lower() == ".zip":
            data = _load_movielens_zip(path)
        else:
            data = RatingsData(ratings=_load_generic(path, columns), items=None, source=str(path))
    if items is not None:
        data = RatingsData(
            ratings=data.ratings, items=load_items(items, columns), source=data.source
        )
    return data
