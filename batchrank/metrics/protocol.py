"""The ranking evaluation protocol: a bundle's (or an export's) top-k lists against held-out
ratings, beside the most-popular and random baselines, all through the same metric code.

Full ranking: every user with a relevant held-out rating gets a list over every movie of the
model's catalogue they have no training interaction with (the ``--exclude`` pairs), scored by
the scorer itself (``--pairs all --users ... --exclude ...``), so the figures are those of the
lists ``batchrank score`` publishes. See docs/evaluation.md.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from batchrank.bundle import Bundle, load_bundle
from batchrank.errors import ConfigError, DataError
from batchrank.metrics.baselines import most_popular, random_lists
from batchrank.metrics.ranking import METRICS, Lists, Truth, list_metrics
from batchrank.sources import ITEM, RATING, USER, Columns, load_ratings
from batchrank.vocab import coerce_ids

__all__ = ["RELEVANT_SHARE", "SYSTEMS", "default_threshold", "evaluate_ranking"]

RELEVANT_SHARE = 0.75
"""Default relevance threshold as a share of the rating scale: 4 stars on 1..5."""
SYSTEMS = ("model", "popular", "random")


def default_threshold(low: float, high: float) -> float:
    """The default relevance threshold for a rating scale: ``low + 0.75 * (high - low)``."""
    return low + RELEVANT_SHARE * (high - low)


@dataclass(frozen=True)
class _Held:
    truth: Truth
    users: np.ndarray
    """Vocabulary index of each evaluated user (user code ``j`` is ``users[j]``)."""
    counts: dict[str, int]


def _held_out(bundle: Bundle, ratings: str, columns: Columns, threshold: float) -> _Held:
    data = load_ratings(ratings, columns=columns)
    t = data.ratings
    uc, _ = coerce_ids(t.column(USER), bundle.users.kind, where=f"{data.source}: `{USER}`")
    ic, _ = coerce_ids(t.column(ITEM), bundle.items.kind, where=f"{data.source}: `{ITEM}`")
    u = bundle.users.lookup(uc)
    frame = pl.DataFrame(
        {
            "u": u,
            "i": bundle.items.lookup(ic),
            "movie": pl.from_arrow(ic),
            "rating": t.column(RATING).to_numpy(),
        }
    )
    known = frame.filter(pl.col("u") != 0)
    relevant = known.filter(pl.col("rating") >= threshold).unique(["u", "movie"])
    per_user = relevant.group_by("u").len().sort("u")
    users = per_user["u"].to_numpy().astype(np.int64)
    n_relevant = per_user["len"].to_numpy().astype(np.int64)
    stride = bundle.items.size
    code = np.searchsorted(users, relevant["u"].to_numpy())
    item = relevant["i"].to_numpy().astype(np.int64)
    keys = np.unique(code[item > 0] * stride + item[item > 0])
    counts = {
        "held_out_ratings": t.num_rows,
        "relevant": relevant.height,
        "relevant_unknown_movies": int((item == 0).sum()),
        "unknown_users": int(pc.count_distinct(uc.filter(pa.array(u == 0))).as_py()),
        "users_without_relevant": int(known["u"].n_unique() - len(users)),
    }
    return _Held(Truth(len(users), n_relevant, keys, stride), users, counts)


def _lists_of(table: pl.DataFrame, bundle: Bundle, held: _Held, where: str) -> Lists:
    """An export's rows (``user_id, movie_id, rank``) as :class:`Lists` of the held users."""
    uc, bad_u = coerce_ids(table["user_id"].to_arrow(), bundle.users.kind, where=where)
    ic, bad_i = coerce_ids(table["movie_id"].to_arrow(), bundle.items.kind, where=where)
    if bad_u.any() or bad_i.any():
        row = int(np.flatnonzero(bad_u | bad_i)[0])
        raise DataError.at(where, row + 1, "bad user or movie id in the export")
    u = bundle.users.lookup(uc).astype(np.int64)
    code = np.minimum(np.searchsorted(held.users, u), max(len(held.users) - 1, 0))
    mine = (held.users[code] == u) if len(held.users) else np.zeros(len(u), bool)
    rank = table["rank"].to_numpy().astype(np.int64)
    item = bundle.items.lookup(ic).astype(np.int64)
    return Lists(code[mine], item[mine], rank[mine])


def read_export(path: Path) -> pl.DataFrame:
    """A top-k export (any format or layout batchrank writes) as ``user_id, movie_id, rank``."""
    name = path.name.lower()
    try:
        if name.endswith(".parquet"):
            frame = pl.read_parquet(path)
        elif ".csv" in name:
            frame = pl.read_csv(path, infer_schema_length=0)
        else:
            frame = pl.read_ndjson(path)
    except (OSError, pl.exceptions.PolarsError) as e:
        raise DataError(f"{path}: cannot read the export ({e})", file=str(path)) from e
    if "items" in frame.columns:  # the nested layout
        frame = frame.explode("items").unnest("items")
    missing = [c for c in ("user_id", "movie_id", "rank") if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: not a batchrank export: column(s) {', '.join(missing)} missing; "
            f"found {', '.join(frame.columns)}",
            file=str(path),
        )
    try:
        return frame.select("user_id", "movie_id", pl.col("rank").cast(pl.Int64))
    except pl.exceptions.PolarsError as e:
        raise DataError(f"{path}: column `rank` is not integer ({e})", file=str(path)) from e


def _score_lists(
    model: Path, bundle: Bundle, held: _Held, exclude: Sequence[str], k: int, columns: Columns
) -> pl.DataFrame:
    """The model's top-``k`` lists of the held users, written by the scorer itself."""
    from batchrank.scoring.api import score_spec
    from batchrank.scoring.spec import ScoreSpec

    with tempfile.TemporaryDirectory(prefix="batchrank-evaluate-") as tmp:
        users = Path(tmp) / "users.parquet"
        pl.from_arrow(pa.table({columns.user: bundle.users.id_at(held.users)})).write_parquet(users)  # type: ignore[union-attr]
        out = Path(tmp) / "top.parquet"
        score_spec(
            ScoreSpec(
                model=model,
                pairs=("all",),
                users=users,
                out=out,
                top_k=k,
                exclude=tuple(exclude),
                user_col=columns.user,
                item_col=columns.item,
                progress="none",
            )
        )
        return pl.read_parquet(out, columns=["user_id", "movie_id", "rank"])


def evaluate_ranking(
    model: str | Path,
    ratings: str | Path,
    *,
    exclude: Sequence[str | Path],
    k: int = 10,
    export: Path | None = None,
    columns: Columns | None = None,
    threshold: float | None = None,
    seed: int = 0,
    curve_k: int | None = None,
) -> dict[str, Any]:
    """Top-k metrics of a bundle's lists (or of ``export``'s) and of both baselines.

    Args:
        model: the bundle (its catalogue and rating scale; its lists unless ``export``).
        ratings: the held-out ratings.
        exclude: the training interactions: excluded from every list, and the popularity.
        k: the cut-off.
        export: evaluate this existing export instead of scoring the model.
        threshold: a rating at least this is relevant (default: 4 on 1..5, scaled).
        seed: the random baseline's seed.
        curve_k: also return ``curves``: NDCG@j and Recall@j for j = 1..curve_k.

    Raises:
        ConfigError: no ``exclude``, or ``k`` beyond an export's lists.
        DataError, ModelError: unreadable inputs or bundle.
    """
    if not exclude:
        raise ConfigError(
            "--ranking needs --exclude with the training interactions (excluded from every "
            "list and the source of the popularity baseline)"
        )
    if k < 1:
        raise ConfigError(f"--k must be at least 1; received {k}")
    from batchrank.scoring.rules import load_exclude

    columns = columns or Columns()
    model = Path(model)
    bundle = load_bundle(model, model=False)
    low, high = bundle.transform.low, bundle.transform.high
    thr = default_threshold(low, high) if threshold is None else threshold
    held = _held_out(bundle, str(ratings), columns, thr)
    top_n = max(k, curve_k or 0)
    excluded_set, _ = load_exclude(
        [str(p) for p in exclude],
        bundle.users,
        bundle.items,
        user_col=columns.user,
        item_col=columns.item,
        chunk_rows=262_144,
        budget_bytes=1 << 30,
        keep_unknown=False,
    )
    try:
        per_user, popularity = excluded_set.tallies()
        if export is None:
            table = _score_lists(model, bundle, held, [str(p) for p in exclude], top_n, columns)
            where = "model lists"
        else:
            table = read_export(export)
            where = str(export)
            longest = int(table["rank"].max() or 0)  # type: ignore[arg-type]
            if longest < top_n:
                raise ConfigError(
                    f"{export}: lists hold at most {longest} movies; cannot evaluate at k = {top_n}"
                )
        train_count = per_user[held.users]
        contains = excluded_set.contains
        catalogue = len(bundle.items)
        systems = {
            "model": _lists_of(table, bundle, held, where),
            "popular": most_popular(held.users, train_count, popularity, top_n, contains),
            "random": random_lists(held.users, train_count, catalogue, top_n, contains, seed),
        }
    finally:
        excluded_set.close()
    result: dict[str, Any] = {
        "k": k,
        "users": held.truth.n_users,
        "relevance": f"rating >= {thr:g} (scale {low:g}-{high:g})",
        "threshold": thr,
        "catalogue": catalogue,
        "training_pairs": excluded_set.pairs,
        "seed": seed,
        **held.counts,
        "source": str(export) if export is not None else "model",
    }
    for name, lists in systems.items():
        result[name] = list_metrics(
            lists, held.truth, k, popularity=popularity, catalogue=catalogue
        )
    if curve_k:
        result["curves"] = {}
        for name, lists in systems.items():
            at = [
                list_metrics(lists, held.truth, j, popularity=popularity, catalogue=catalogue)
                for j in range(1, curve_k + 1)
            ]
            result["curves"][name] = {m: [a[m] for a in at] for m in ("ndcg", "recall")}
    return result


def metrics_table(result: dict[str, Any]) -> str:
    """The result as a fixed-width text table: a row per metric, a column per system."""
    k = result["k"]
    names = {
        "ndcg": f"NDCG@{k}",
        "precision": f"Precision@{k}",
        "recall": f"Recall@{k}",
        "map": f"MAP@{k}",
        "mrr": f"MRR@{k}",
        "hit_rate": f"HitRate@{k}",
        "coverage": "coverage",
        "mean_popularity": "mean popularity",
        "gini": "Gini (exposure)",
    }
    lines = [f"{'metric':<16}" + "".join(f"{s:>10}" for s in SYSTEMS)]
    for m in METRICS:
        fmt = "{:>10.1f}" if m == "mean_popularity" else "{:>10.4f}"
        lines.append(f"{names[m]:<16}" + "".join(fmt.format(result[s][m]) for s in SYSTEMS))
    return "\n".join(lines)
