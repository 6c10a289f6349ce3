"""Reference lists for the same users, through the same metric code: most popular and random.

Both recommend, per user, only catalogue movies the user has no training interaction with
(the protocol the model is held to), built vectorised over all users: the most-popular list
walks the popularity order (training interactions descending, then catalogue index, i.e.
movie id, ascending) far enough to skip the user's training movies; the random list draws
candidates from a hash of (seed, user, attempt, draw), drops training movies and repeats, and
redraws for the few users left short. Both give a user the same list whichever other users
are in the call, so the protocol can build them one chunk of users at a time.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from batchrank.metrics.ranking import Lists

__all__ = ["Excluded", "most_popular", "popularity_order", "random_lists"]

Excluded = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``excluded(users, items) -> bool array``: whether each pair is a training interaction
(``users`` as indices of the id space the excluded set was built on)."""


def _first_k(user: np.ndarray, item: np.ndarray, k: int) -> Lists:
    """The first ``k`` rows of each user, in the given order (rows grouped by user)."""
    order = np.argsort(user, kind="stable")
    user, item = user[order], item[order]
    starts = np.searchsorted(user, user)  # first row of each row's user
    rank = np.arange(len(user)) - starts + 1
    keep = rank <= k
    return Lists(user[keep], item[keep], rank[keep])


def popularity_order(popularity: np.ndarray) -> np.ndarray:
    """Catalogue indices by training interactions descending, then index ascending."""
    return np.lexsort((np.arange(len(popularity) - 1), -popularity[1:])) + 1


def most_popular(
    users: np.ndarray,
    train_count: np.ndarray,
    popularity: np.ndarray,
    k: int,
    excluded: Excluded,
    order: np.ndarray | None = None,
) -> Lists:
    """Top-``k`` most popular unseen movies per user.

    Args:
        users: the users' indices in the excluded set's id space (list row ``j`` is user
            code ``j``).
        train_count: per user code, its training interactions (how far to walk).
        popularity: training interactions per catalogue index (index 0: OOV, never listed).
        k: list length.
        excluded: the training interactions test.
        order: :func:`popularity_order` of ``popularity``, when already computed.
    """
    if order is None:
        order = popularity_order(popularity)
    walk = np.minimum(k + train_count, len(order)).astype(np.int64)
    code = np.repeat(np.arange(len(users)), walk)
    starts = np.repeat(np.cumsum(walk) - walk, walk)
    item = order[np.arange(len(code)) - starts]
    keep = ~excluded(users[code], item)
    return _first_k(code[keep], item[keep], k)


_MIX = (np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijection of uint64 that scatters neighbouring inputs."""
    z = (z ^ (z >> np.uint64(30))) * _MIX[0]
    z = (z ^ (z >> np.uint64(27))) * _MIX[1]
    return z ^ (z >> np.uint64(31))


def _draw(seed: int, user: np.ndarray, attempt: int, j: np.ndarray, catalogue: int) -> np.ndarray:
    """Catalogue indices ``1..catalogue``, a function of (seed, user, attempt, draw number)."""
    base = _mix(np.full(len(user), seed % (1 << 64), dtype=np.uint64))
    z = _mix(base ^ user.astype(np.uint64))
    z = _mix(z + (np.uint64(attempt) << np.uint64(40)) + j.astype(np.uint64))
    return (z % np.uint64(catalogue)).astype(np.int64) + 1


def random_lists(
    users: np.ndarray,
    train_count: np.ndarray,
    catalogue: int,
    k: int,
    excluded: Excluded,
    seed: int = 0,
) -> Lists:
    """``k`` distinct unseen movies per user drawn uniformly at random (seeded).

    Each user's draws are a function of the seed and the user's index alone (a counter-based
    hash, not a shared generator), so a user gets the same list whichever users are drawn
    with it: evaluating users in chunks gives the lists of one pass over all of them.
    """
    want = np.minimum(k, np.maximum(catalogue - train_count, 0))
    got_user: list[np.ndarray] = []
    got_item: list[np.ndarray] = []
    have = np.zeros(len(users), dtype=np.int64)
    seen = np.zeros(0, dtype=np.int64)  # keys of movies already drawn, per user
    todo = np.flatnonzero(have < want)
    for attempt in range(32):
        if not len(todo):
            break
        draws = 2 * (want[todo] - have[todo]) + 2 * train_count[todo] * k // max(catalogue, 1) + 4
        code = np.repeat(todo, draws)
        j = np.arange(len(code)) - np.repeat(np.cumsum(draws) - draws, draws)
        item = _draw(seed, users[code], attempt, j, catalogue)
        key = code.astype(np.int64) * (catalogue + 1) + item
        # each key's first draw (np.unique(return_index=True), by a stable sort)
        by_key = np.argsort(key, kind="stable")
        ordered = key[by_key]
        lead = np.ones(len(ordered), dtype=bool)
        np.not_equal(ordered[1:], ordered[:-1], out=lead[1:])
        first = np.sort(by_key[lead])
        code, item, key = code[first], item[first], key[first]
        fresh = ~np.isin(key, seen) & ~excluded(users[code], item)
        code, item = code[fresh], item[fresh]
        # keep at most what each user still wants, in draw order
        order = np.argsort(code, kind="stable")
        code, item = code[order], item[order]
        pos = np.arange(len(code)) - np.searchsorted(code, code)
        ok = pos < (want - have)[code]
        code, item = code[ok], item[ok]
        got_user.append(code)
        got_item.append(item)
        # new keys are distinct and none is in `seen`: a sort, not a union's unique
        seen = np.sort(np.concatenate([seen, code.astype(np.int64) * (catalogue + 1) + item]))
        have += np.bincount(code, minlength=len(users))
        todo = np.flatnonzero(have < want)
    for c in todo:  # pathological: a user who rated nearly the whole catalogue
        rng = np.random.default_rng([seed % (1 << 64), int(users[c])])
        cand = np.arange(1, catalogue + 1)
        cand = cand[~excluded(np.full(catalogue, users[c]), cand)]
        cand = cand[~np.isin(c * (catalogue + 1) + cand, seen)]
        pick = rng.permutation(cand)[: want[c] - have[c]]
        got_user.append(np.full(len(pick), c))
        got_item.append(pick)
    user = np.concatenate(got_user) if got_user else np.zeros(0, np.int64)
    item = np.concatenate(got_item) if got_item else np.zeros(0, np.int64)
    return _first_k(user, item, k)
