"""Top-k list metrics, vectorised over the users of a chunk (numpy; no loop over users).

Definitions (docs/evaluation.md has them with their sources): binary relevance; for a user
with relevant set R (|R| >= 1) and a list whose item at rank r is relevant when hit(r) = 1,

- Precision@k = hits@k / k; Recall@k = hits@k / |R|; HitRate@k = [hits@k > 0]
- NDCG@k = DCG@k / IDCG@k, DCG@k = sum_{r<=k} hit(r) / log2(r + 1), IDCG@k the DCG of an ideal
  list: sum_{r <= min(k, |R|)} 1 / log2(r + 1)
- AP@k = sum_{r<=k} hit(r) * Precision@r / min(k, |R|); MAP@k its mean
- RR@k = 1 / (rank of the first hit within k), 0 without one; MRR@k its mean

Per-user metrics are averaged over the users with at least one relevant item (every one of
them counts, with 0 for a missing or empty list). List-level: coverage = distinct movies in
the lists / catalogue size; mean popularity = mean, over every recommended (user, movie) row,
of the movie's training interaction count; Gini index of exposure over the whole catalogue
(movies never recommended count with exposure 0): sorted ascending x_1..x_n,
G = sum_j (2j - n - 1) x_j / (n * sum x).

:class:`MetricSums` accumulates them over chunks of users (disjoint user ranges): exact sums
of the per-user values (``math.fsum``, each chunk's sum carried with its rounding residual) and
integer exposure counts over the catalogue, so any chunking gives the same figures as one
chunk of every user.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["METRICS", "PER_USER", "Lists", "MetricSums", "Truth", "gini", "list_metrics"]

METRICS = (
    "ndcg",
    "precision",
    "recall",
    "map",
    "mrr",
    "hit_rate",
    "coverage",
    "mean_popularity",
    "gini",
)
"""Every metric :func:`list_metrics` returns, in report order."""
PER_USER = METRICS[:6]
"""The metrics averaged over users (the others are list-level)."""


@dataclass(frozen=True)
class Truth:
    """The held-out relevant items of the evaluated users.

    Attributes:
        n_users: users evaluated (each has at least one relevant item); codes ``0..n_users-1``.
        n_relevant: per user code, the number of relevant items (>= 1).
        keys: sorted unique ``user_code * stride + item`` of relevant pairs whose movie the
            catalogue holds (item >= 1).
        stride: key stride (catalogue size + 1).
    """

    n_users: int
    n_relevant: np.ndarray
    keys: np.ndarray
    stride: int


@dataclass(frozen=True)
class Lists:
    """Ranked lists: one row per recommendation.

    Attributes:
        user: user code (``0..Truth.n_users-1``) of each row.
        item: catalogue index (``1..n``; 0 for a movie the catalogue lacks) of each row.
        rank: 1-based rank within the user's list.
    """

    user: np.ndarray
    item: np.ndarray
    rank: np.ndarray

    def top(self, k: int) -> Lists:
        """Only the rows ranked within ``k``."""
        keep = self.rank <= k
        return Lists(self.user[keep], self.item[keep], self.rank[keep])


def _member(key: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    if len(sorted_keys) == 0 or len(key) == 0:
        return np.zeros(len(key), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_keys, key), len(sorted_keys) - 1)
    return np.asarray(sorted_keys[pos] == key)


def gini(exposure: np.ndarray) -> float:
    """Gini index of non-negative exposure counts (0: even; towards 1: concentrated)."""
    x = np.sort(np.asarray(exposure, dtype=np.float64))
    n, total = len(x), float(x.sum())
    if n == 0 or total == 0:
        return 0.0
    j = np.arange(1, n + 1, dtype=np.float64)
    return float(np.sum((2 * j - n - 1) * x) / (n * total))


def per_user(lists: Lists, truth: Truth, k: int) -> dict[str, np.ndarray]:
    """The per-user metrics at ``k``: arrays over user codes."""
    top = lists.top(k)
    order = np.lexsort((top.rank, top.user))
    u, i, r = top.user[order], top.item[order], top.rank[order].astype(np.float64)
    hit = _member(u.astype(np.int64) * truth.stride + i, truth.keys) & (i > 0)
    n = truth.n_users
    hits = np.bincount(u, weights=hit, minlength=n)
    dcg = np.bincount(u, weights=hit / np.log2(r + 1), minlength=n)
    discounts = np.concatenate([[0.0], np.cumsum(1 / np.log2(np.arange(2, k + 2)))])
    ideal_len = np.minimum(truth.n_relevant, k)
    # hits so far within each user's list, for Precision@r at every hit
    cum = np.cumsum(hit)
    start = np.searchsorted(u, u)  # each row's user's first row (rows are sorted by user)
    cum_in_user: np.ndarray = cum - (cum[start] - hit[start])
    ap = np.bincount(u, weights=hit * cum_in_user / r, minlength=n) / ideal_len
    first = np.full(n, np.inf)
    np.minimum.at(first, u[hit], r[hit])
    return {
        "ndcg": dcg / discounts[ideal_len],
        "precision": hits / k,
        "recall": hits / truth.n_relevant,
        "map": ap,
        "mrr": np.where(np.isfinite(first), 1 / first, 0.0),
        "hit_rate": (hits > 0).astype(np.float64),
    }


def _exact_sum(values: np.ndarray) -> tuple[float, float]:
    """``values``' sum as an unevaluated pair ``(s, r)``: ``s`` correctly rounded, ``r`` the
    correctly rounded remainder, so sums of chunks add up to (within 2**-100 of) one sum."""
    v = values.tolist()
    s = math.fsum(v)
    v.append(-s)
    return s, math.fsum(v)


@dataclass
class MetricSums:
    """Running totals of :data:`METRICS` at ``k``, over chunks of distinct users.

    Attributes:
        k: the cut-off.
        popularity: training interactions per catalogue index (index 0 unused).
        catalogue: number of movies that could be recommended (indices ``1..catalogue``).
        list_level: also count exposure (coverage, mean popularity, Gini); without it those
            are 0 (a curve's points need only the per-user metrics).
    """

    k: int
    popularity: np.ndarray
    catalogue: int
    list_level: bool = True
    users: int = 0
    parts: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in PER_USER})
    exposure: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    popularity_sum: int = 0
    rows: int = 0

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be at least 1; received {self.k}")
        if self.list_level:
            self.exposure = np.zeros(self.catalogue + 1, dtype=np.int64)

    def add(self, lists: Lists, truth: Truth) -> None:
        """Add the users of ``truth`` (none added before) and their ``lists``."""
        self.users += truth.n_users
        for name, v in per_user(lists, truth, self.k).items():
            self.parts[name].extend(_exact_sum(v))
        if not self.list_level:
            return
        top = lists.top(self.k)
        shown = top.item[top.item > 0]
        self.exposure += np.bincount(shown, minlength=self.catalogue + 1)[: self.catalogue + 1]
        pop = np.asarray(self.popularity)[top.item]
        self.popularity_sum += pop.sum().item() if len(pop) else 0
        self.rows += len(top.item)

    def result(self) -> dict[str, float]:
        """Every metric of :data:`METRICS`, averaged over the users added."""
        n = self.users
        out = {m: math.fsum(self.parts[m]) / n if n else 0.0 for m in PER_USER}
        exposure = self.exposure[1:] if self.list_level else np.zeros(0, np.int64)
        c = self.catalogue
        out["coverage"] = float(np.count_nonzero(exposure) / c) if c else 0.0
        out["mean_popularity"] = self.popularity_sum / self.rows if self.rows else 0.0
        out["gini"] = gini(exposure)
        return {name: float(out[name]) for name in METRICS}


def list_metrics(
    lists: Lists, truth: Truth, k: int, *, popularity: np.ndarray, catalogue: int
) -> dict[str, float]:
    """Every metric of :data:`METRICS` at ``k``, averaged over the evaluated users.

    Args:
        lists: the users' ranked lists (user codes of :class:`Truth`).
        truth: the relevant held-out items.
        k: the cut-off (>= 1).
        popularity: training interactions per catalogue index (index 0 unused).
        catalogue: number of movies that could be recommended (indices ``1..catalogue``).
    """
    sums = MetricSums(k, popularity, catalogue)
    sums.add(lists, truth)
    return sums.result()
