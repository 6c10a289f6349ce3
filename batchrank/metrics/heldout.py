"""The held-out ratings, streamed into user ranges: each evaluated user's relevant movies.

One pass over the ratings, chunk by chunk: rows of users the model knows with a rating of at
least the threshold go to a :class:`~batchrank.metrics.spill.RangeSpill` as (user index, movie
index); a relevant movie the model does not know gets an index past the catalogue (one per
distinct id, so it counts once in |R| and never as a hit). Per user only two bits are kept
(known in the held-out ratings, has a relevant rating); per movie, nothing. :meth:`ranges`
then gives one range of users at a time as a :class:`~batchrank.metrics.ranking.Truth`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batchrank.bundle import Bundle
from batchrank.metrics.inputs import iter_ratings
from batchrank.metrics.ranking import Truth
from batchrank.metrics.spill import RangeSpill
from batchrank.scoring.exclude import sorted_unique
from batchrank.sources import ITEM, RATING, USER, Columns
from batchrank.vocab import coerce_ids

__all__ = ["HeldOut", "read_held_out"]

CHUNK_ROWS = 1 << 18
"""Held-out ratings read at a time."""


@dataclass
class HeldOut:
    """The relevant held-out pairs by user range, and what was counted on the way.

    Attributes:
        spill: rows ``(user index, movie index)``; a movie unknown to the model has an index
            ``>= stride`` (``stride + 1 + n`` for the n-th distinct unknown id, ``stride``
            for a null id).
        stride: the catalogue's index space, ``items.size``.
        evaluated: per user index, whether the user has a relevant held-out rating.
        counts: ``held_out_ratings``, ``unknown_users``, ``users_without_relevant``, and,
            once :meth:`ranges` has run, ``relevant`` and ``relevant_unknown_movies``.
    """

    spill: RangeSpill
    stride: int
    evaluated: np.ndarray
    counts: dict[str, int]
    unknown_movies: int = 0
    _unknown_ids: pa.Array | None = field(default=None, repr=False)

    @property
    def users(self) -> int:
        """Users evaluated (with at least one relevant held-out rating)."""
        return int(np.count_nonzero(self.evaluated))

    def _unknown_index(self, ids: pa.Array) -> np.ndarray:
        """Indices past the catalogue for unknown movie ids (the same id: the same index)."""
        if self._unknown_ids is None:
            self._unknown_ids = pa.array([], type=ids.type)
        uniq = pc.unique(ids.drop_null())
        new = uniq.filter(pc.invert(pc.is_in(uniq, value_set=self._unknown_ids)))
        self._unknown_ids = pa.concat_arrays([self._unknown_ids, new])
        self.unknown_movies = len(self._unknown_ids)
        idx = pc.index_in(ids, value_set=self._unknown_ids).fill_null(-1).to_numpy()
        return np.asarray(self.stride + 1 + idx, dtype=np.int64)

    def ranges(self) -> Iterator[tuple[int, np.ndarray, Truth]]:
        """``(range, users, truth)`` per user range, ascending: the range's evaluated user
        indices (sorted; user code ``j`` is ``users[j]``) and their relevant movies."""
        width = self.stride + 1 + self.unknown_movies
        self.counts["relevant"] = self.counts["relevant_unknown_movies"] = 0
        for r, rows in self.spill:
            keys = sorted_unique(rows[:, 0] * width + rows[:, 1])
            u, item = np.divmod(keys, width)
            first = np.flatnonzero(np.diff(u, prepend=-1))  # each user's first key (u sorted)
            users = u[first]
            n_relevant = np.diff(first, append=len(u))
            code = np.repeat(np.arange(len(users)), n_relevant)
            known = item < self.stride
            self.counts["relevant"] += len(keys)
            self.counts["relevant_unknown_movies"] += int(np.count_nonzero(~known))
            truth_keys = code[known] * self.stride + item[known]  # sorted: keys were
            yield r, users, Truth(len(users), n_relevant, truth_keys, self.stride)


def read_held_out(
    bundle: Bundle, ratings: str, columns: Columns, threshold: float, spill: RangeSpill
) -> HeldOut:
    """Stream ``ratings`` into ``spill``: the relevant pairs of the users the model knows."""
    stride = bundle.items.size
    held = HeldOut(spill, stride, np.zeros(bundle.users.size, dtype=bool), {})
    seen = np.zeros(bundle.users.size, dtype=bool)  # known users in the held-out ratings
    unknown_users: pa.Array | None = None
    rows = 0
    source = ratings
    for t in iter_ratings(ratings, columns, CHUNK_ROWS):
        rows += t.num_rows
        uc, _ = coerce_ids(t.column(USER), bundle.users.kind, where=f"{source}: `{USER}`")
        ic, _ = coerce_ids(t.column(ITEM), bundle.items.kind, where=f"{source}: `{ITEM}`")
        u = bundle.users.lookup(uc).astype(np.int64)
        item = bundle.items.lookup(ic).astype(np.int64)
        rating = t.column(RATING).to_numpy()
        seen[u] = True
        relevant = (u != 0) & (rating >= threshold)
        held.evaluated[u[relevant]] = True
        lost = uc.filter(pa.array(u == 0)).drop_null()
        if len(lost):
            both = lost if unknown_users is None else pa.concat_arrays([unknown_users, lost])
            unknown_users = pc.unique(both)
        mine = np.flatnonzero(relevant)
        j = item[mine]
        outside = j == 0
        if outside.any():
            j[outside] = held._unknown_index(ic.take(pa.array(mine[outside])))
        spill.add(u[mine], j)
    seen[0] = False
    held.counts = {
        "held_out_ratings": rows,
        "unknown_users": 0 if unknown_users is None else len(unknown_users),
        "users_without_relevant": int(np.count_nonzero(seen)) - held.users,
    }
    return held
