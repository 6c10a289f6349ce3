"""Where side features come from: the MovieLens 100K files, or the user's own tables.

MovieLens 100K ships ``u.user`` (``id|age|gender|occupation|zip``) and ``u.item`` (``id|title|
release date|video date|url|19 genre flags``). From them: the users' age (numeric), gender,
occupation and zip region (first character of the zip code; categorical), and the movies'
release year (numeric; missing for a few) and genres (multi-hot, names from ``u.genre``).

A user-supplied table (``--user-features``, ``--item-features``) replaces the MovieLens one of
its side; see :func:`batchrank.features.read_feature_table` for the format.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from batchrank.errors import ConfigError, DataError
from batchrank.features import FeatureTable, check_table, read_frame

__all__ = ["SideTables", "load_side_tables", "movielens_tables"]


@dataclass(frozen=True)
class SideTables:
    """The feature tables of both sides (None where a side has none)."""

    user: FeatureTable | None = None
    item: FeatureTable | None = None

    @property
    def any(self) -> bool:
        """Whether either side has features."""
        return self.user is not None or self.item is not None


def _lines(raw: bytes) -> list[tuple[int, list[str]]]:
    text = raw.decode("iso-8859-1")
    return [(n, ln.split("|")) for n, ln in enumerate(text.splitlines(), 1) if ln.strip()]


def _parse_u_user(raw: bytes, where: str) -> FeatureTable:
    rows = []
    for n, f in _lines(raw):
        if len(f) < 5 or not f[0].strip().isdigit() or not f[1].strip().isdigit():
            raise DataError(f"{where}: line {n} is not `id|age|gender|occupation|zip`")
        rows.append((int(f[0]), float(f[1]), f[2].strip(), f[3].strip(), f[4].strip()[:1]))
    frame = pl.DataFrame(
        rows,
        schema=["user_id", "age", "gender", "occupation", "zip_region"],
        orient="row",
    ).with_columns(pl.col(c).replace("", None) for c in ("gender", "occupation", "zip_region"))
    return check_table(frame, "user_id", where=where)


def _year(date: str) -> float | None:
    tail = date.strip()[-4:]
    return float(tail) if len(tail) == 4 and tail.isdigit() else None


def _parse_u_item(raw: bytes, where: str, genres: list[str] | None) -> FeatureTable:
    rows = []
    for n, f in _lines(raw):
        flags = f[5:]
        if len(f) < 6 or not f[0].strip().isdigit() or any(g not in ("0", "1") for g in flags):
            raise DataError(f"{where}: line {n} is not `id|title|date|video date|url|0/1 flags`")
        names = genres if genres is not None and len(genres) == len(flags) else None
        tags = [(names[k] if names else f"genre_{k}") for k, g in enumerate(flags) if g == "1"]
        rows.append((int(f[0]), _year(f[2]), tags))
    frame = pl.DataFrame(
        rows,
        schema={"movie_id": pl.Int64, "release_year": pl.Float64, "genres": pl.List(pl.String)},
        orient="row",
    )
    return check_table(frame, "movie_id", where=where)


def _genre_names(raw: bytes | None) -> list[str] | None:
    if raw is None:
        return None
    return [f[0] for _, f in _lines(raw)]


def movielens_tables(spec: str | Path) -> SideTables:
    """The feature tables of a MovieLens 100K folder or ``.zip``, or none for other sources."""
    path = Path(str(spec))
    if str(spec).startswith("tfds:") or not path.exists():
        return SideTables()
    if path.is_dir():
        files = {n: path / n for n in ("u.user", "u.item", "u.genre")}
        read = {n: p.read_bytes() for n, p in files.items() if p.is_file()}
        where = {n: str(p) for n, p in files.items()}
    elif path.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
                data = next((n for n in names if n.endswith("u.data")), None)
                if data is None:
                    return SideTables()
                prefix = data[: -len("u.data")]
                read = {
                    n: zf.read(prefix + n)
                    for n in ("u.user", "u.item", "u.genre")
                    if prefix + n in names
                }
                where = {n: f"{path}:{prefix}{n}" for n in ("u.user", "u.item", "u.genre")}
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise DataError(f"{path}: cannot read zip file ({e})") from e
    else:
        return SideTables()
    user = _parse_u_user(read["u.user"], where["u.user"]) if "u.user" in read else None
    item = (
        _parse_u_item(read["u.item"], where["u.item"], _genre_names(read.get("u.genre")))
        if "u.item" in read
        else None
    )
    return SideTables(user=user, item=item)


def load_side_tables(
    ratings: str | Path,
    *,
    user_features: Path | None = None,
    item_features: Path | None = None,
    user_column: str = "user_id",
    item_column: str = "movie_id",
    categorical: tuple[str, ...] = (),
) -> SideTables:
    """The feature tables for training: the user's files, else the MovieLens ones.

    ``categorical`` names columns of either file to treat as categories.

    Raises:
        ConfigError: a ``categorical`` name is a column of neither file.
        DataError: a table is unreadable or fails :func:`batchrank.features.check_table`.
    """
    given = {
        side: (Path(p), read_frame(Path(p)))
        for side, p in (("user", user_features), ("item", item_features))
        if p is not None
    }
    for name in categorical:
        if not any(name in frame.columns for _, frame in given.values()):
            files = " or ".join(str(p) for p, _ in given.values()) or "no feature file"
            raise ConfigError(f"--categorical {name}: no column `{name}` in {files}")
    found = movielens_tables(ratings)
    tables = {"user": found.user, "item": found.item}
    for side, (path, frame) in given.items():
        tables[side] = check_table(
            frame,
            user_column if side == "user" else item_column,
            categorical=tuple(c for c in categorical if c in frame.columns),
            where=str(path),
            from_text=path.suffix.lower() != ".parquet",
        )
    return SideTables(user=tables["user"], item=tables["item"])
