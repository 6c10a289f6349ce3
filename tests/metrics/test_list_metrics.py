"""The list metrics and baselines against a reference written from the formulas (plain loops)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from batchrank.metrics.baselines import most_popular, random_lists
from batchrank.metrics.ranking import METRICS, Lists, Truth, gini, list_metrics


def reference(
    lists: dict[int, list[int]],
    relevant: dict[int, set[int]],
    extra_relevant: dict[int, int],
    k: int,
    popularity: list[int],
    catalogue: int,
) -> dict[str, float]:
    """The docs' formulas, one user at a time."""
    sums = dict.fromkeys(("ndcg", "precision", "recall", "map", "mrr", "hit_rate"), 0.0)
    shown: list[int] = []
    for user, rel in relevant.items():
        n_rel = len(rel) + extra_relevant.get(user, 0)
        top = lists.get(user, [])[:k]
        shown += top
        hits = dcg = ap = 0.0
        rr = 0.0
        for r, item in enumerate(top, start=1):
            if item in rel:
                hits += 1
                dcg += 1 / math.log2(r + 1)
                ap += hits / r
                if rr == 0.0:
                    rr = 1 / r
        idcg = sum(1 / math.log2(r + 1) for r in range(1, min(k, n_rel) + 1))
        sums["ndcg"] += dcg / idcg
        sums["precision"] += hits / k
        sums["recall"] += hits / n_rel
        sums["map"] += ap / min(k, n_rel)
        sums["mrr"] += rr
        sums["hit_rate"] += 1.0 if hits else 0.0
    out = {m: v / len(relevant) for m, v in sums.items()}
    exposure = [shown.count(i) for i in range(1, catalogue + 1)]
    out["coverage"] = sum(1 for e in exposure if e) / catalogue
    out["mean_popularity"] = sum(popularity[i] for i in shown) / len(shown) if shown else 0.0
    x = sorted(exposure)
    n, total = len(x), sum(x)
    out["gini"] = (
        sum((2 * j - n - 1) * x[j - 1] for j in range(1, n + 1)) / (n * total) if total else 0.0
    )
    return out


@st.composite
def problems(draw: st.DrawFn) -> tuple[object, ...]:
    catalogue = draw(st.integers(1, 15))
    n_users = draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    relevant: dict[int, set[int]] = {}
    extra: dict[int, int] = {}
    lists: dict[int, list[int]] = {}
    for u in range(n_users):
        rel = set(
            rng.choice(
                np.arange(1, catalogue + 1), rng.integers(0, catalogue + 1), replace=False
            ).tolist()
        )
        unknown = int(rng.integers(0, 3)) if not rel else int(rng.integers(0, 2))
        if not rel and not unknown:
            unknown = (
                1  # every evaluated user has a relevant item (maybe one outside the catalogue)
            )
        relevant[u], extra[u] = rel, unknown
        if rng.random() < 0.85:
            lists[u] = rng.permutation(np.arange(1, catalogue + 1))[
                : rng.integers(0, catalogue + 1)
            ].tolist()
    k = draw(st.integers(1, 12))
    popularity = [0, *rng.integers(0, 50, size=catalogue).tolist()]
    return lists, relevant, extra, k, popularity, catalogue


def to_arrays(
    lists: dict[int, list[int]],
    relevant: dict[int, set[int]],
    extra: dict[int, int],
    catalogue: int,
) -> tuple[Lists, Truth]:
    rows = [(u, item, r) for u, items in lists.items() for r, item in enumerate(items, start=1)]
    arr = np.array(rows, dtype=np.int64).reshape(-1, 3)
    stride = catalogue + 1
    keys = np.unique(
        np.array([u * stride + i for u, rel in relevant.items() for i in rel], dtype=np.int64)
    )
    n_rel = np.array([len(relevant[u]) + extra[u] for u in range(len(relevant))], dtype=np.int64)
    # shuffled rows: the metrics must not depend on the order lists arrive in
    perm = np.random.default_rng(0).permutation(len(arr))
    arr = arr[perm]
    return Lists(arr[:, 0], arr[:, 1], arr[:, 2]), Truth(len(relevant), n_rel, keys, stride)


@settings(max_examples=300, deadline=None)
@given(problems())
def test_metrics_equal_the_reference(problem: tuple[object, ...]) -> None:
    lists, relevant, extra, k, popularity, catalogue = problem
    got_lists, truth = to_arrays(lists, relevant, extra, catalogue)  # type: ignore[arg-type]
    got = list_metrics(
        got_lists,
        truth,
        k,
        popularity=np.array(popularity),
        catalogue=catalogue,  # type: ignore[arg-type]
    )
    want = reference(lists, relevant, extra, k, popularity, catalogue)  # type: ignore[arg-type]
    assert list(got) == list(METRICS)
    for m in METRICS:
        assert abs(got[m] - want[m]) <= 1e-9, (m, got[m], want[m])


def test_perfect_and_empty_lists() -> None:
    truth = Truth(1, np.array([2]), np.array([1 * 0 + 3, 5]), stride=10)
    perfect = list_metrics(
        Lists(np.array([0, 0]), np.array([3, 5]), np.array([1, 2])),
        truth,
        10,
        popularity=np.zeros(10),
        catalogue=9,
    )
    assert perfect["ndcg"] == 1.0 and perfect["recall"] == 1.0 and perfect["map"] == 1.0
    empty = list_metrics(
        Lists(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)),
        truth,
        10,
        popularity=np.zeros(10),
        catalogue=9,
    )
    assert empty["ndcg"] == 0.0 and empty["coverage"] == 0.0
    assert gini(np.array([5, 5, 5])) == 0.0
    assert abs(gini(np.array([0, 0, 9])) - 2 / 3) < 1e-12


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 20), st.integers(1, 6), st.integers(1, 8), st.integers(0, 10**6))
def test_baselines_against_brute_force(catalogue: int, n_users: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    train = {
        u: set(
            rng.choice(
                np.arange(1, catalogue + 1), rng.integers(0, catalogue + 1), replace=False
            ).tolist()
        )
        for u in range(n_users)
    }
    users = np.arange(n_users, dtype=np.int64) * 3 + 1  # indices in another id space
    stride = catalogue + 1
    keys = np.array(
        sorted(int(users[u]) * stride + i for u, s in train.items() for i in s), dtype=np.int64
    )

    def excluded(uu: np.ndarray, ii: np.ndarray) -> np.ndarray:
        return np.isin(uu * stride + ii, keys)

    popularity = np.concatenate([[0], rng.integers(0, 4, size=catalogue)])
    counts = np.array([len(train[u]) for u in range(n_users)])
    pop = most_popular(users, counts, popularity, k, excluded)
    order = sorted(range(1, catalogue + 1), key=lambda i: (-popularity[i], i))
    for u in range(n_users):
        want = [i for i in order if i not in train[u]][:k]
        mine = pop.item[pop.user == u][np.argsort(pop.rank[pop.user == u])].tolist()
        assert mine == want
        assert pop.rank[pop.user == u].tolist() == sorted(pop.rank[pop.user == u].tolist())
    rnd = random_lists(users, counts, catalogue, k, excluded, seed=seed)
    again = random_lists(users, counts, catalogue, k, excluded, seed=seed)
    assert np.array_equal(rnd.item, again.item) and np.array_equal(rnd.user, again.user)
    for u in range(n_users):
        items = rnd.item[rnd.user == u].tolist()
        assert len(items) == len(set(items)) == min(k, catalogue - len(train[u]))
        assert not set(items) & train[u]
        assert sorted(rnd.rank[rnd.user == u].tolist()) == list(range(1, len(items) + 1))
