"""Column names and Arrow schemas of the scorer's tables, declared once.

Every stage speaks these tables: mapped chunks (``user_id, movie_id, u, i``), scored and
partial top-k rows (:func:`partial_schema`), ranked results (:func:`result_schema`), the long
output with titles (:func:`long_schema`) and rejected rows (:data:`REJECTS_SCHEMA`).
"""

from __future__ import annotations

from typing import Literal

import pyarrow as pa

__all__ = [
    "LONG_COLUMNS",
    "MOVIE_ID",
    "PARTIAL_COLUMNS",
    "RANK",
    "RATING",
    "REJECTS_SCHEMA",
    "RESULT_COLUMNS",
    "SCORE",
    "STARS",
    "TITLE",
    "USER_ID",
    "I",
    "U",
    "id_type",
    "long_schema",
    "partial_schema",
    "result_schema",
]

USER_ID = "user_id"
MOVIE_ID = "movie_id"
U = "u"
"""int32 user vocabulary index (0: out of vocabulary)."""
I = "i"  # noqa: E741 (the movie index column's name)
"""int32 movie vocabulary index (0: out of vocabulary)."""
SCORE = "score"
"""The model's prediction, in label units (what ranks)."""
STARS = "stars"
"""The prediction rescaled to the rating scale and clipped (what is shown)."""
RANK = "rank"
RATING = "rating"
"""The rating column of training data."""
TITLE = "title"

PARTIAL_COLUMNS = (USER_ID, MOVIE_ID, SCORE, STARS)
"""Columns of a partial top-k table, in order."""
RESULT_COLUMNS = (USER_ID, RANK, MOVIE_ID, STARS, SCORE)
"""Columns of ranked result tables, in order."""
LONG_COLUMNS = (USER_ID, RANK, MOVIE_ID, TITLE, STARS, SCORE)
"""Columns of the long output layout, in order."""

_ID_TYPES = {"int": pa.int64(), "str": pa.string()}


def id_type(kind: Literal["int", "str"] | str) -> pa.DataType:
    """The Arrow type of ids of a vocabulary kind: ``int64`` or ``string``."""
    return _ID_TYPES[kind]


def partial_schema(user_type: pa.DataType, item_type: pa.DataType) -> pa.Schema:
    """Columns of a partial top-k: ``user_id, movie_id, score, stars``."""
    return pa.schema(
        [
            pa.field(USER_ID, user_type),
            pa.field(MOVIE_ID, item_type),
            pa.field(SCORE, pa.float32()),
            pa.field(STARS, pa.float32()),
        ]
    )


def result_schema(user_type: pa.DataType, item_type: pa.DataType) -> pa.Schema:
    """Columns of ranked rows: ``user_id, rank, movie_id, stars, score``."""
    return pa.schema(
        [
            pa.field(USER_ID, user_type),
            pa.field(RANK, pa.int32()),
            pa.field(MOVIE_ID, item_type),
            pa.field(STARS, pa.float32()),
            pa.field(SCORE, pa.float32()),
        ]
    )


def long_schema(user_type: pa.DataType, item_type: pa.DataType) -> pa.Schema:
    """Columns of the long output: ``user_id, rank, movie_id, title, stars, score``."""
    ranked = result_schema(user_type, item_type)
    return pa.schema(
        [
            ranked.field(USER_ID),
            ranked.field(RANK),
            ranked.field(MOVIE_ID),
            pa.field(TITLE, pa.string()),
            ranked.field(STARS),
            ranked.field(SCORE),
        ]
    )


REJECTS_SCHEMA = pa.schema(
    [
        pa.field("file", pa.string()),
        pa.field("row", pa.int64()),
        pa.field(USER_ID, pa.string()),
        pa.field(MOVIE_ID, pa.string()),
        pa.field("reason", pa.string()),
    ]
)
"""Columns of a rejects table: the file, its 1-based data row, the raw ids and the reason."""
