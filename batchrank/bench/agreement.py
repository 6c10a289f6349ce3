"""Comparing two variants' outputs: naive against batchrank, bfloat16 against float32."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["precision_agreement", "topk_agreement"]


def topk_agreement(a: Path, b: Path) -> float | None:
    """Share of ``b``'s (user, movie) rows also in ``a``'s top-k (a sanity check)."""
    import polars as pl

    if not (a.exists() and b.exists()):
        return None
    left = pl.read_parquet(a, columns=["user_id", "movie_id"]).unique()
    right = pl.read_parquet(b, columns=["user_id", "movie_id"]).unique()
    if right.height == 0:
        return None
    return left.join(right, on=["user_id", "movie_id"], how="inner").height / right.height


def precision_agreement(reference: Path, other: Path) -> dict[str, Any] | None:
    """How far ``other``'s top-k lists are from ``reference``'s (same pairs, same k).

    Returns:
        ``identical_users`` (share of users whose ranked list is the same, movie by movie),
        ``mean_overlap`` (mean over users of |both lists| / |reference list|) and
        ``max_abs_delta_stars`` (over the (user, movie) rows in both outputs); None when
        either file is absent.
    """
    import polars as pl

    if not (reference.exists() and other.exists()):
        return None
    cols = ["user_id", "rank", "movie_id", "stars"]
    ref = pl.read_parquet(reference, columns=cols)
    oth = pl.read_parquet(other, columns=cols)
    if ref.height == 0:
        return None
    lists = (
        ref.group_by("user_id")
        .agg(pl.col("movie_id").sort_by("rank").alias("a"))
        .join(
            oth.group_by("user_id").agg(pl.col("movie_id").sort_by("rank").alias("b")),
            on="user_id",
            how="left",
        )
    )
    identical = lists.select((pl.col("a") == pl.col("b")).fill_null(False).mean()).item()
    both = ref.join(oth, on=["user_id", "movie_id"], how="inner", suffix="_b")
    per_user = (
        ref.group_by("user_id")
        .len()
        .join(both.group_by("user_id").len().rename({"len": "hit"}), on="user_id", how="left")
    )
    overlap = per_user.select((pl.col("hit").fill_null(0) / pl.col("len")).mean()).item()
    delta = both.select((pl.col("stars") - pl.col("stars_b")).abs().max()).item()
    return {
        "identical_users": float(identical),
        "mean_overlap": float(overlap),
        "max_abs_delta_stars": float(delta) if delta is not None else None,
        "users": ref["user_id"].n_unique(),
    }
