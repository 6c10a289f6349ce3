"""The ranking evaluation protocol: a bundle's (or an export's) top-k lists against held-out
ratings, beside the most-popular and random baselines, all through the same metric code.

Full ranking: every user with a relevant held-out rating gets a list over every movie of the
model's catalogue they have no training interaction with (the ``--exclude`` pairs), scored by
the scorer itself (``--pairs all --users ... --exclude ...``), so the figures are those of the
lists ``batchrank score`` publishes. See docs/evaluation.md.

Memory is bounded: the held-out ratings and the lists are streamed into ranges of
``chunk_users`` users on disk (:mod:`.spill`), and the metrics are added up one range at a
time (:class:`~batchrank.metrics.ranking.MetricSums`), to the figures of a single range.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from batchrank.bundle import Bundle, load_bundle
from batchrank.errors import ConfigError, DataError
from batchrank.metrics.baselines import most_popular, popularity_order, random_lists
from batchrank.metrics.heldout import HeldOut, read_held_out
from batchrank.metrics.inputs import iter_export
from batchrank.metrics.ranking import METRICS, Lists, MetricSums, Truth
from batchrank.metrics.spill import RangeSpill
from batchrank.sources import Columns
from batchrank.vocab import coerce_ids

__all__ = [
    "CHUNK_USERS",
    "RELEVANT_SHARE",
    "SYSTEMS",
    "default_threshold",
    "evaluate_ranking",
    "metrics_table",
]

RELEVANT_SHARE = 0.75
"""Default relevance threshold as a share of the rating scale: 4 stars on 1..5."""
SYSTEMS = ("model", "popular", "random")
CHUNK_USERS = 1 << 14
"""Users evaluated at a time (one range of user indices)."""
_EXPORT_ROWS = 1 << 18


def default_threshold(low: float, high: float) -> float:
    """The default relevance threshold for a rating scale: ``low + 0.75 * (high - low)``."""
    return low + RELEVANT_SHARE * (high - low)


def _spill_lists(
    path: Path, bundle: Bundle, evaluated: np.ndarray, spill: RangeSpill, where: str
) -> int:
    """Stream an export's rows of the evaluated users into ``spill`` as (user, movie, rank)
    indices; return the longest rank in the export (any user)."""
    longest, row = 0, 0
    for frame in iter_export(path, _EXPORT_ROWS):
        uc, bad_u = coerce_ids(frame["user_id"].to_arrow(), bundle.users.kind, where=where)
        ic, bad_i = coerce_ids(frame["movie_id"].to_arrow(), bundle.items.kind, where=where)
        if bad_u.any() or bad_i.any():
            first = int(np.flatnonzero(bad_u | bad_i)[0])
            raise DataError.at(where, row + first + 1, "bad user or movie id in the export")
        row += frame.height
        rank = frame["rank"].to_numpy().astype(np.int64)
        if len(rank):
            longest = max(longest, int(frame["rank"].max() or 0))  # type: ignore[arg-type]
        u = bundle.users.lookup(uc).astype(np.int64)
        mine = evaluated[u]
        item = bundle.items.lookup(ic).astype(np.int64)
        spill.add(u[mine], item[mine], rank[mine])
    return longest


def _write_users(path: Path, bundle: Bundle, evaluated: np.ndarray, column: str) -> None:
    """The evaluated users' ids, in vocabulary order, a slice at a time."""
    index = np.flatnonzero(evaluated)
    schema = pa.schema([(column, bundle.users.ids.type)])
    step = 1 << 20
    with pq.ParquetWriter(path, schema) as writer:
        for lo in range(0, max(len(index), 1), step):
            ids = bundle.users.id_at(index[lo : lo + step])
            writer.write_table(pa.table({column: ids}, schema=schema))


def _score_lists(
    model: Path, bundle: Bundle, held: HeldOut, exclude: Sequence[str], k: int, columns: Columns
) -> Path:
    """The model's top-``k`` lists of the evaluated users, written by the scorer itself."""
    from batchrank.scoring.api import score_spec
    from batchrank.scoring.spec import ScoreSpec

    tmp = held.spill.folder.parent
    users = tmp / "users.parquet"
    _write_users(users, bundle, held.evaluated, columns.user)
    out = tmp / "top.parquet"
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
    return out


def _joined(held: HeldOut, lists: RangeSpill) -> Iterator[tuple[np.ndarray, Truth, Lists]]:
    """Each range's evaluated users, their truth and their lists (user codes of the range)."""
    pending = iter(lists)
    nxt = next(pending, None)
    for r, users, truth in held.ranges():
        while nxt is not None and nxt[0] < r:
            nxt = next(pending, None)
        rows = nxt[1] if nxt is not None and nxt[0] == r else np.zeros((0, 3), np.int64)
        code = np.minimum(np.searchsorted(users, rows[:, 0]), len(users) - 1)
        mine = users[code] == rows[:, 0]
        yield users, truth, Lists(code[mine], rows[mine, 1], rows[mine, 2])


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
    chunk_users: int = CHUNK_USERS,
    memory_budget_mb: float = 1024.0,
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
        chunk_users: users evaluated at a time (any value gives the same figures).
        memory_budget_mb: the training pairs' size in memory past which they spill to disk.

    Raises:
        ConfigError: no ``exclude``, ``k`` or ``chunk_users`` below 1, or ``k`` beyond an
            export's lists.
        DataError, ModelError: unreadable inputs or bundle.
    """
    if not exclude:
        raise ConfigError(
            "--ranking needs --exclude with the training interactions (excluded from every "
            "list and the source of the popularity baseline)"
        )
    if k < 1:
        raise ConfigError(f"--k must be at least 1; received {k}")
    if chunk_users < 1:
        raise ConfigError(f"--chunk-users must be at least 1; received {chunk_users}")
    from batchrank.scoring.rules import load_exclude

    columns = columns or Columns()
    model = Path(model)
    bundle = load_bundle(model, model=False, weights=False)  # its catalogue and scale
    low, high = bundle.transform.low, bundle.transform.high
    thr = default_threshold(low, high) if threshold is None else threshold
    top_n = max(k, curve_k or 0)
    catalogue = len(bundle.items)
    excluded = [str(p) for p in exclude]
    with tempfile.TemporaryDirectory(prefix="batchrank-evaluate-") as work:
        tmp = Path(work)
        held = read_held_out(
            bundle, str(ratings), columns, thr, RangeSpill(tmp / "held", 2, chunk_users)
        )
        excluded_set, _ = load_exclude(
            excluded,
            bundle.users,
            bundle.items,
            user_col=columns.user,
            item_col=columns.item,
            chunk_rows=262_144,
            budget_bytes=max(1, int(memory_budget_mb * (1 << 20))),
            keep_unknown=False,
        )
        try:
            per_user, popularity = excluded_set.tallies()
            if export is None:
                path = _score_lists(model, bundle, held, excluded, top_n, columns)
                where = "model lists"
            else:
                path, where = export, str(export)
            lists = RangeSpill(tmp / "lists", 3, chunk_users)
            longest = _spill_lists(path, bundle, held.evaluated, lists, where)
            if export is not None and longest < top_n:
                raise ConfigError(
                    f"{export}: lists hold at most {longest} movies; cannot evaluate at k = {top_n}"
                )
            cuts = sorted({k, *range(1, (curve_k or 0) + 1)})
            sums = {
                name: {j: MetricSums(j, popularity, catalogue, list_level=j == k) for j in cuts}
                for name in SYSTEMS
            }
            order = popularity_order(popularity)
            contains = excluded_set.contains
            for users, truth, model_lists in _joined(held, lists):
                count = per_user[users]
                systems = {
                    "model": model_lists,
                    "popular": most_popular(users, count, popularity, top_n, contains, order),
                    "random": random_lists(users, count, catalogue, top_n, contains, seed),
                }
                for name, ranked in systems.items():
                    for acc in sums[name].values():
                        acc.add(ranked, truth)
        finally:
            excluded_set.close()
    result: dict[str, Any] = {
        "k": k,
        "users": held.users,
        "relevance": f"rating >= {thr:g} (scale {low:g}-{high:g})",
        "threshold": thr,
        "catalogue": catalogue,
        "training_pairs": excluded_set.pairs,
        "seed": seed,
        **held.counts,
        "source": str(export) if export is not None else "model",
    }
    for name in SYSTEMS:
        result[name] = sums[name][k].result()
    if curve_k:
        result["curves"] = {
            name: {
                m: [sums[name][j].result()[m] for j in range(1, curve_k + 1)]
                for m in ("ndcg", "recall")
            }
            for name in SYSTEMS
        }
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
