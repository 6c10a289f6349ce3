"""Exactness and determinism of the partial / streaming top-k, in memory and spilled."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchrank.scoring import topk as topk_mod
from batchrank.scoring.ranking import add_rank, merge_partials, partial_topk
from batchrank.scoring.topk import TopK

Row = tuple[object, object, float, float]

_STR_IDS = ["a", "b", "B", "ab", "é", "日本", "z9", "", "10", "9", "🎬", "aa"]


def _ids(kind: str, n: int) -> list[object]:
    if kind == "int":
        return [int(x) for x in (np.arange(n) * 7919 % 101 - 50)]
    return [_STR_IDS[i % len(_STR_IDS)] + "x" * (i // len(_STR_IDS)) for i in range(n)]


@st.composite
def scored_rows(draw: st.DrawFn) -> tuple[str, list[Row]]:
    """Random rows: few users and movies, repeated pairs (same score), many tied stars (scores
    below 0 and above 1 clip to the ends of the 0-5 scale)."""
    kind = draw(st.sampled_from(["int", "str"]))
    users = _ids(kind, draw(st.integers(1, 8)))
    movies = _ids(kind, draw(st.integers(1, 10)))
    levels = draw(st.integers(1, 4))
    pairs = draw(
        st.lists(
            st.tuples(st.sampled_from(users), st.sampled_from(movies), st.integers(0, levels)),
            max_size=120,
        )
    )
    score_of: dict[tuple[object, object], float] = {}
    rows: list[Row] = []
    for u, m, lvl in pairs:
        score = score_of.setdefault((u, m), float(np.float32(1.5 * lvl / levels - 0.25)))
        stars = float(np.float32(min(max(5.0 * score, 0.0), 5.0)))
        rows.append((u, m, score, stars))
    return kind, rows


def _table(kind: str, rows: list[Row]) -> pa.Table:
    id_type = pa.int64() if kind == "int" else pa.string()
    return pa.table(
        {
            "user_id": pa.array([r[0] for r in rows], id_type),
            "movie_id": pa.array([r[1] for r in rows], id_type),
            "score": pa.array([r[2] for r in rows], pa.float32()),
            "stars": pa.array([r[3] for r in rows], pa.float32()),
            "extra": pa.array(range(len(rows)), pa.int64()),
        }
    )


def _reference(rows: list[Row], k: int) -> list[tuple[object, int, object, float, float]]:
    """Brute force: dedup, sort each user's rows by (-score, movie), take k, users ascending."""
    by_user: dict[object, dict[object, Row]] = {}
    for r in rows:
        by_user.setdefault(r[0], {})[r[1]] = r
    out = []
    for u in sorted(by_user, key=lambda x: x.encode() if isinstance(x, str) else x):  # type: ignore[arg-type,return-value]
        best = sorted(by_user[u].values(), key=lambda r: (-r[2], r[1]))[:k]
        out += [(u, i + 1, r[1], r[3], r[2]) for i, r in enumerate(best)]
    return out


def _rows_of(tables: list[pa.Table]) -> list[tuple[object, int, object, float, float]]:
    out = []
    for t in tables:
        assert t.column_names == ["user_id", "rank", "movie_id", "stars", "score"]
        assert t.schema.field("rank").type == pa.int32()
        d = t.to_pydict()
        out += list(
            zip(d["user_id"], d["rank"], d["movie_id"], d["stars"], d["score"], strict=True)
        )
    return out


def _splits(n: int, cuts: list[int]) -> list[tuple[int, int]]:
    edges = sorted({0, n, *(c % (n + 1) for c in cuts)})
    return list(itertools.pairwise(edges)) or [(0, 0)]


def _run(
    table: pa.Table, k: int, cuts: list[int], tmp: Path | None = None, **kw: object
) -> tuple[list[pa.Table], dict[str, object]]:
    tk = TopK(
        k,
        user_type=table.schema.field("user_id").type,
        item_type=table.schema.field("movie_id").type,
        spill_dir=tmp,
        **kw,
    )  # type: ignore[arg-type]
    with tk:
        for lo, hi in _splits(table.num_rows, cuts):
            tk.add(table.slice(lo, hi - lo))
        tables = list(tk.results())
        stats = tk.stats
    return tables, stats


_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_SETTINGS
@given(data=scored_rows(), k=st.integers(1, 5), cuts=st.lists(st.integers(0, 200), max_size=8))
def test_partial_topk_matches_reference(
    data: tuple[str, list[Row]], k: int, cuts: list[int]
) -> None:
    kind, rows = data
    table = _table(kind, rows)
    part = partial_topk(table, k)
    assert part.column_names == ["user_id", "movie_id", "score", "stars"]
    assert part.schema.field("user_id").type == table.schema.field("user_id").type
    assert _rows_of([add_rank(part)]) == _reference(rows, k)
    # Idempotent.
    assert partial_topk(part, k).equals(part)
    # Associative over any split, through concat and through merge_partials.
    pieces = [table.slice(lo, hi - lo) for lo, hi in _splits(table.num_rows, cuts)]
    partials = [partial_topk(p, k) for p in pieces]
    assert partial_topk(pa.concat_tables(partials), k).equals(part)
    assert merge_partials(partials, k).equals(part)


@_SETTINGS
@given(
    data=scored_rows(),
    k=st.integers(1, 5),
    cuts=st.lists(st.integers(0, 200), max_size=10),
    compact_rows=st.integers(1, 50),
)
def test_topk_in_memory_matches_reference(
    data: tuple[str, list[Row]], k: int, cuts: list[int], compact_rows: int
) -> None:
    kind, rows = data
    tables, stats = _run(_table(kind, rows), k, cuts, compact_rows=compact_rows)
    assert _rows_of(tables) == _reference(rows, k)
    assert stats["spilled"] is False
    assert stats["rows_in"] == len(rows)


@_SETTINGS
@given(
    data=scored_rows(),
    k=st.integers(1, 5),
    cuts=st.lists(st.integers(0, 200), max_size=10),
    budget=st.sampled_from([1, 300, 3000]),
    given_boundaries=st.booleans(),
)
def test_topk_spilled_matches_reference(
    tmp_path: Path,
    data: tuple[str, list[Row]],
    k: int,
    cuts: list[int],
    budget: int,
    given_boundaries: bool,
) -> None:
    kind, rows = data
    table = _table(kind, rows)
    boundaries = None
    if given_boundaries:
        users = sorted({r[0] for r in rows}, key=lambda x: x.encode() if isinstance(x, str) else x)  # type: ignore[arg-type,return-value]
        boundaries = pa.array(users[1::2], table.schema.field("user_id").type)
    spill = tmp_path / "spill"
    tables, stats = _run(
        table, k, cuts, spill, memory_budget_bytes=budget, compact_rows=1, boundaries=boundaries
    )
    assert _rows_of(tables) == _reference(rows, k)
    if budget == 1 and rows:
        assert stats["spilled"] is True
        assert stats["partitions"] >= 1
    assert not spill.exists()  # created on demand, removed by close()


def _big(kind: str, n: int, users: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    u = rng.integers(0, users, n)
    m = rng.integers(0, 500, n)
    score = ((u * 31 + m * 17) % 13).astype(np.float32) / 13  # same pair -> same score
    ids_u: pa.Array = pa.array(u, pa.int64())
    ids_m: pa.Array = pa.array(m, pa.int64())
    if kind == "str":
        ids_u = pa.array([f"u{x}" for x in u], pa.string())
        ids_m = pa.array([f"m{x}" for x in m], pa.string())
    return pa.table(
        {
            "user_id": ids_u,
            "movie_id": ids_m,
            "score": pa.array(score, pa.float32()),
            "stars": pa.array(np.clip(score * 5, 0, 5).astype(np.float32), pa.float32()),
        }
    )


@pytest.mark.parametrize("kind", ["int", "str"])
def test_spill_identical_to_memory_on_larger_input(tmp_path: Path, kind: str) -> None:
    table = _big(kind, 60_000, 3_000)
    cuts = list(range(0, table.num_rows, 4_099))
    mem, mstats = _run(table, 7, cuts)
    spilled, sstats = _run(table, 7, cuts, tmp_path, memory_budget_bytes=40_000, compact_rows=2_000)
    assert mstats["spilled"] is False and sstats["spilled"] is True
    assert int(sstats["partitions"]) > 1  # type: ignore[call-overload]
    a, b = pa.concat_tables(mem), pa.concat_tables(spilled)
    assert a.equals(b)
    assert a.num_rows == 3_000 * 7
    # Sorted by user then rank.
    users = a.column("user_id").to_pylist()
    assert users == sorted(users)


def test_input_sorted_by_user_resplits_last_range(tmp_path: Path) -> None:
    """Boundaries from the first state only cover early users; read back splits the rest."""
    table = _big("int", 40_000, 2_000, seed=3)
    table = table.sort_by([("user_id", "ascending")])
    cuts = list(range(0, table.num_rows, 2_000))
    mem, _ = _run(table, 5, cuts)
    spilled, stats = _run(table, 5, cuts, tmp_path, memory_budget_bytes=20_000, compact_rows=500)
    assert stats["spilled"] is True
    assert pa.concat_tables(mem).equals(pa.concat_tables(spilled))


def test_results_hold_complete_users(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(topk_mod, "_OUT_ROWS", 50)
    table = _big("int", 5_000, 200)
    for kw in ({}, {"memory_budget_bytes": 5_000, "spill_dir": tmp_path}):
        tk = TopK(6, user_type=pa.int64(), item_type=pa.int64(), **kw)  # type: ignore[arg-type]
        tk.add(table)
        tables = list(tk.results())
        tk.close()
        assert len(tables) > 5
        seen: list[object] = []
        for t in tables:
            users = t.column("user_id").to_pylist()
            assert users == sorted(users)
            assert not seen or users[0] > seen[-1]
            seen += users
            ranks = t.column("rank").to_pylist()
            assert ranks[0] == 1


def test_nan_and_duplicates() -> None:
    table = pa.table(
        {
            "user_id": pa.array([1, 1, 1, 1], pa.int64()),
            "movie_id": pa.array([3, 2, 3, 1], pa.int64()),
            "score": pa.array([0.5, math.nan, 0.5, 0.1], pa.float32()),
            "stars": pa.array([2.5, math.nan, 2.5, 0.5], pa.float32()),
        }
    )
    part = partial_topk(table, 10)
    assert part.column("movie_id").to_pylist() == [3, 1, 2]  # NaN scores rank last


def test_casts_ids_and_floats() -> None:
    tk = TopK(2, user_type=pa.string(), item_type=pa.int64())
    tk.add(
        pa.table(
            {
                "user_id": pa.array(["b", "a"], pa.large_string()),
                "movie_id": pa.array([1, 2], pa.int32()),
                "score": pa.array([0.5, 0.25], pa.float64()),
                "stars": pa.array([2.5, 1.25], pa.float64()),
            }
        )
    )
    (out,) = list(tk.results())
    tk.close()
    assert out.schema == pa.schema(
        [
            ("user_id", pa.string()),
            ("rank", pa.int32()),
            ("movie_id", pa.int64()),
            ("stars", pa.float32()),
            ("score", pa.float32()),
        ]
    )
    assert out.column("user_id").to_pylist() == ["a", "b"]


def test_misuse() -> None:
    with pytest.raises(ValueError, match="k >= 1"):
        TopK(0, user_type=pa.int64(), item_type=pa.int64())
    tk = TopK(1, user_type=pa.int64(), item_type=pa.int64())
    with pytest.raises(ValueError, match="lacks columns"):
        tk.add(pa.table({"user_id": [1]}))
    assert list(tk.results()) == []
    with pytest.raises(RuntimeError):
        tk.add(_big("int", 10, 2))
    with pytest.raises(RuntimeError):
        list(tk.results())
    tk.close()
    tk.close()
    empty = merge_partials([], 3, user_type=pa.string())
    assert empty.schema.field("user_id").type == pa.string()
    assert empty.num_rows == 0


def test_close_without_results_frees_spill(tmp_path: Path) -> None:
    spill = tmp_path / "s"
    tk = TopK(3, user_type=pa.int64(), item_type=pa.int64(), memory_budget_bytes=1, spill_dir=spill)
    tk.add(_big("int", 2_000, 100))
    tk.add(_big("int", 2_000, 100, seed=1))
    assert tk.stats["spilled"] is True
    assert spill.is_dir() and not any(spill.iterdir())  # spill files have no names
    tk.close()
    assert not spill.exists()


@st.composite
def grouped_scored(draw: st.DrawFn) -> pa.Table:
    """Rows in runs of one user (a user may come back in a later run), with repeated pairs,
    tied and NaN scores, and the OOV index 0 shared by several raw user ids."""
    n_users = draw(st.integers(1, 6))
    runs = draw(
        st.lists(st.tuples(st.integers(0, n_users), st.integers(1, 60)), min_size=1, max_size=10)
    )
    levels = draw(st.sampled_from([3, 50, 10_000]))
    nans = draw(st.booleans())
    rows: list[tuple[int, int, int, float]] = []
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    for u, length in runs:
        for _ in range(length):
            user = (1000 + int(rng.integers(3))) if u == 0 else u  # OOV: several raw ids
            movie = int(rng.integers(40))
            score = float(np.float32(hash((user, movie)) % levels / levels))
            if nans and (user * 31 + movie) % 7 == 0:  # a pair's copies share their score
                score = float("nan")
            rows.append((user, movie, u, score))
    user, movie, u, score = zip(*rows, strict=True)
    s = np.array(score, dtype=np.float32)
    return pa.table(
        {
            "user_id": pa.array(user, pa.int64()),
            "movie_id": pa.array(movie, pa.int64()),
            "score": pa.array(s),
            "stars": pa.array(np.nan_to_num(s) * 5),
            "u": pa.array(u, pa.int32()),
        }
    )


@settings(max_examples=300, deadline=None)
@given(table=grouped_scored(), k=st.integers(1, 6))
def test_run_thresholds_cut_only_rows_outside_the_top_k(table: pa.Table, k: int) -> None:
    # the fast path (with `u`: rows cut by per-run thresholds first) equals the plain sort
    fast = partial_topk(table, k)
    plain = partial_topk(table.drop_columns(["u"]), k)
    assert fast.schema == plain.schema

    def rows(t: pa.Table) -> list[tuple[object, ...]]:  # NaN != NaN: compare them as text
        return [tuple(repr(v) for v in r.values()) for r in t.to_pylist()]

    assert rows(fast) == rows(plain)


def _user_key(x: object) -> object:
    return x.encode() if isinstance(x, str) else x


@_SETTINGS
@given(
    data=scored_rows(),
    k=st.integers(1, 5),
    cuts=st.lists(st.integers(0, 200), max_size=8),
    back=st.integers(0, 6),
    budget=st.sampled_from([1, 300, 1 << 30]),
)
def test_topk_sealed_matches_reference(
    tmp_path: Path, data: tuple[str, list[Row]], k: int, cuts: list[int], back: int, budget: int
) -> None:
    """Rows in ascending user order (sealed at every compaction), then ``back`` rows of the
    earliest users again: the order breaks and the sealed rows return to the state (or, past
    the budget, to the spill ranges)."""
    kind, rows = data
    ordered = sorted(rows, key=lambda r: _user_key(r[0]))  # type: ignore[arg-type,return-value]
    ordered += ordered[:back]
    spill = tmp_path / "spill"
    tables, _ = _run(
        _table(kind, ordered),
        k,
        cuts,
        spill,
        memory_budget_bytes=budget,
        compact_rows=1,
        seal_bytes=1,
    )
    assert _rows_of(tables) == _reference(ordered, k)
    assert not spill.exists()


def test_input_in_user_order_is_sealed_not_spilled(tmp_path: Path) -> None:
    """Grouped input in user order keeps a small state under a budget the whole state would
    exceed; a chunk going back to earlier users ends sealing, with the same result."""
    table = _big("int", 40_000, 2_000, seed=3).sort_by([("user_id", "ascending")])
    cuts = list(range(0, table.num_rows, 2_000))
    mem, _ = _run(table, 5, cuts, seal_bytes=None)
    sealed, stats = _run(
        table, 5, cuts, tmp_path, memory_budget_bytes=20_000, compact_rows=500, seal_bytes=4_000
    )
    assert stats["spilled"] is False
    assert int(stats["sealed_rows"]) > 9_000  # type: ignore[call-overload]
    assert pa.concat_tables(mem).equals(pa.concat_tables(sealed))
    back = pa.concat_tables([table, table.slice(0, 3_000)])  # users 0.. come back at the end
    cuts = list(range(0, back.num_rows, 2_000))
    mem, _ = _run(back, 5, cuts, seal_bytes=None)
    for budget in (1 << 30, 20_000):  # the sealed rows return to memory, or to the spill
        out, stats = _run(
            back, 5, cuts, tmp_path, memory_budget_bytes=budget, compact_rows=500, seal_bytes=4_000
        )
        assert stats["spilled"] is (budget == 20_000)
        assert pa.concat_tables(mem).equals(pa.concat_tables(out))
    assert not any(tmp_path.iterdir())
