"""The part-rolling writer: users never split, parts independent of splits, folder publishing."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchrank.errors import OutputError
from batchrank.scoring import writers as writers_mod
from batchrank.scoring.parts import PART_MARKER, PartWriter, list_parts, listing_sha256
from batchrank.storage import LOCAL, TMP_MARK, CommitUnit
from batchrank.storage import swap as swap_mod
from tests.scoring.test_writers import COMBOS, _splits, long_rows, ranked, read_back, write

META = {"batchrank.top_k": "3"}


def uneven(counts: list[int], seed: int = 0) -> pa.Table:
    """Ranked rows where user ``i`` has ``counts[i]`` recommendations."""
    full = ranked(len(counts), max(counts), seed=seed)
    keep = np.concatenate([np.arange(c) + i * max(counts) for i, c in enumerate(counts)])
    return full.take(pa.array(keep.astype(np.int64)))


def write_parts(out: Path, fmt: str, layout: str, tables: list[pa.Table], n: int, **kw: Any):
    w = PartWriter(out, max_rows=n, format=fmt, layout=layout, metadata=META, **kw)  # type: ignore[arg-type]
    for t in tables:
        w.write(t)
    return w.close(commit=True)


def part_rows(path: Path, fmt: str, layout: str) -> list[list[dict[str, Any]]]:
    return [read_back(p, fmt, layout, False) for p in list_parts(path)]


def _suffix(fmt: str) -> str:
    return {"parquet": ".parquet", "csv": ".csv", "jsonl": ".jsonl"}[fmt]


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    counts=st.lists(st.integers(1, 9), min_size=1, max_size=40),
    n=st.integers(1, 30),
    cuts_a=st.lists(st.integers(0, 10_000), max_size=8),
    cuts_b=st.lists(st.integers(0, 10_000), max_size=8),
    combo=st.sampled_from(COMBOS),
)
def test_parts_hold_whole_users_and_do_not_depend_on_splits(
    tmp_path_factory: pytest.TempPathFactory,
    counts: list[int],
    n: int,
    cuts_a: list[int],
    cuts_b: list[int],
    combo: tuple[str, str],
) -> None:
    fmt, layout = combo
    tmp = tmp_path_factory.mktemp("parts")
    table = uneven(counts, seed=n)
    out_a, out_b = tmp / f"a{_suffix(fmt)}", tmp / f"b{_suffix(fmt)}"
    a = write_parts(out_a, fmt, layout, _splits(table, cuts_a, False), n)
    b = write_parts(out_b, fmt, layout, _splits(table, cuts_b, True), n)
    names = [p.name for p in list_parts(out_a)]
    assert names == [p.name for p in list_parts(out_b)]
    for pa_, pb in zip(list_parts(out_a), list_parts(out_b), strict=True):
        assert pa_.read_bytes() == pb.read_bytes()
    assert a["sha256"] == b["sha256"] and a["files"] == [
        {**f, "path": f["path"].replace("b.", "a.", 1)} for f in b["files"]
    ]
    parts = part_rows(out_a, fmt, layout)
    assert [r for part in parts for r in part] == long_rows(table)  # in order, nothing lost
    seen: set[Any] = set()
    for part, entry in zip(parts, a["files"], strict=True):
        users = [r["user_id"] for r in part]
        distinct = list(dict.fromkeys(users))
        assert not seen & set(distinct), "a user is split across parts"
        seen |= set(distinct)
        size = len(distinct) if layout == "nested" else len(users)
        assert size <= n or len(distinct) == 1, "a part over the limit holds more than one user"
        assert entry["rows"] == size and entry["users"] == len(distinct)
    # greedy: a part closes only when the next user does not fit
    if layout == "long":
        for this, nxt in itertools.pairwise(parts):
            first_next = sum(1 for r in nxt if r["user_id"] == nxt[0]["user_id"])
            assert len(this) + first_next > n


@pytest.mark.parametrize(("fmt", "layout"), COMBOS)
def test_concatenated_parts_are_the_single_file(tmp_path: Path, fmt: str, layout: str) -> None:
    table = uneven([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5] * 7)
    single = tmp_path / f"one{_suffix(fmt)}"
    write(single, fmt, layout, [table])
    folder = tmp_path / f"many{_suffix(fmt)}"
    summary = write_parts(folder, fmt, layout, [table], 10)
    assert summary["parts"] > 3
    rows = [r for part in part_rows(folder, fmt, layout) for r in part]
    assert rows == read_back(single, fmt, layout, False)
    if fmt != "parquet":  # text: each part is the single file's lines, in order
        drop = 1 if fmt == "csv" else 0
        body = b"".join(
            b"".join(p.read_bytes().splitlines(keepends=True)[drop:]) for p in list_parts(folder)
        )
        assert body == b"".join(single.read_bytes().splitlines(keepends=True)[drop:])
    else:
        assert pq.read_metadata(list_parts(folder)[0]).metadata[b"batchrank.top_k"] == b"3"


@pytest.mark.parametrize("suffix", [".csv.gz", ".jsonl.zst", ".ndjson"])
def test_parts_take_the_output_suffix_and_compression(tmp_path: Path, suffix: str) -> None:
    folder = tmp_path / f"Top{suffix.upper()}"
    fmt = "csv" if ".csv" in suffix else "jsonl"
    comp = {".gz": "gzip", ".zst": "zstd"}.get(suffix[suffix.rfind(".") :])
    write_parts(folder, fmt, "long", [ranked(9, 3)], 6, compression=comp)
    assert [p.name for p in list_parts(folder)] == [f"part-0000{i}{suffix}" for i in range(5)]
    if comp == "gzip":
        assert list_parts(folder)[0].read_bytes()[:2] == b"\x1f\x8b"


def test_manifest_entries_match_the_files(tmp_path: Path) -> None:
    folder = tmp_path / "top.parquet"
    summary = write_parts(folder, "parquet", "long", [ranked(25, 4)], 30)
    assert summary["parts"] == 4 and summary["users"] == 25 and summary["rows"] == 100
    assert sorted(os.listdir(folder)) == [PART_MARKER] + [f"part-0000{i}.parquet" for i in range(4)]
    total = 0
    for entry in summary["files"]:
        data = (tmp_path / entry["path"]).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["bytes"] == len(data)
        assert entry["rows"] == pq.read_metadata(tmp_path / entry["path"]).num_rows
        total += len(data)
    assert summary["bytes"] == total
    listing = "".join(
        f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n" for p in list_parts(folder)
    )
    assert summary["sha256"] == hashlib.sha256(listing.encode()).hexdigest()  # sha256sum part-*
    assert summary["sha256"] == listing_sha256(summary["files"])
    marker = json.loads((folder / PART_MARKER).read_text())
    assert marker == {
        "batchrank_parts": 1,
        "format": "parquet",
        "layout": "long",
        "max_rows_per_file": 30,
        "parts": 4,
    }


def test_one_user_over_the_limit_gets_a_part_of_its_own(tmp_path: Path) -> None:
    folder = tmp_path / "top.jsonl"
    summary = write_parts(folder, "jsonl", "long", [uneven([2, 12, 2, 2])], 5)
    assert [f["rows"] for f in summary["files"]] == [2, 12, 4]


def test_no_rows_is_one_empty_part_with_the_schema(tmp_path: Path) -> None:
    folder = tmp_path / "top.parquet"
    summary = write_parts(folder, "parquet", "nested", [], 10)
    (part,) = list_parts(folder)
    assert summary["parts"] == 1 and summary["files"][0]["rows"] == 0
    assert pq.read_schema(part).names == ["user_id", "items"]


def test_numbering_past_five_digits_stays_in_order(tmp_path: Path) -> None:
    for name in ("part-99999.csv", "part-100000.csv", "part-00002.csv", "other.csv"):
        (tmp_path / name).write_text("")
    assert [p.name for p in list_parts(tmp_path)] == [
        "part-00002.csv",
        "part-99999.csv",
        "part-100000.csv",
    ]


def test_nothing_at_the_target_until_commit_and_nothing_left_on_discard(tmp_path: Path) -> None:
    folder = tmp_path / "top.parquet"
    w = PartWriter(folder, max_rows=4, format="parquet", layout="long", metadata=META)
    w.write(ranked(10, 2))
    assert not folder.exists()
    (tmp,) = tmp_path.iterdir()
    assert TMP_MARK in tmp.name and list_parts(tmp)  # full parts already written inside it
    w.close(commit=False)
    assert list(tmp_path.iterdir()) == []


def test_a_failing_part_discards_the_whole_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    real = writers_mod.OutputWriter.finish

    def fail_third(self: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OutputError(f"{self.out}: cannot write output (no space left on device)")
        return real(self)

    monkeypatch.setattr(writers_mod.OutputWriter, "finish", fail_third)
    w = PartWriter(tmp_path / "top.csv", max_rows=2, format="csv", layout="long", metadata={})
    with pytest.raises(OutputError, match="no space left"):
        w.write(ranked(10, 2))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("atomic_swap", [True, False])
def test_a_replaced_folder_rolls_back_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, atomic_swap: bool
) -> None:
    swaps: list[bool] = []
    real = swap_mod.exchange

    def exchange(a: Path, b: Path) -> bool:
        # without it: the two-rename fallback of kernels and file systems lacking the swap
        swaps.append(real(a, b) if atomic_swap else False)
        return swaps[-1]

    monkeypatch.setattr(swap_mod, "exchange", exchange)
    folder = tmp_path / "top.parquet"
    write_parts(folder, "parquet", "long", [ranked(20, 3)], 6)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    w = PartWriter(folder, max_rows=100, format="parquet", layout="long", metadata=META)
    w.write(ranked(5, 3, seed=9))
    staged, _ = w.finish()
    blocker = LOCAL.stage(tmp_path / "after.json")
    unit = CommitUnit()
    unit.add(staged)
    unit.add(blocker)
    blocker.path.unlink()  # the second file's commit fails: the folder's must roll back
    with pytest.raises(OutputError, match=r"after\.json: cannot commit"):
        unit.commit()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["top.parquet"]
    assert swaps == [atomic_swap, atomic_swap]  # the publish, then the rollback


@pytest.mark.parametrize("atomic_swap", [True, False])
def test_a_rerun_with_fewer_parts_leaves_no_stale_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, atomic_swap: bool
) -> None:
    if not atomic_swap:
        monkeypatch.setattr(swap_mod, "exchange", lambda a, b: False)
    folder = tmp_path / "top.csv"
    write_parts(folder, "csv", "long", [ranked(20, 3)], 3)
    assert len(list_parts(folder)) == 20
    write_parts(folder, "csv", "long", [ranked(20, 3)], 30)
    assert [p.name for p in list_parts(folder)] == ["part-00000.csv", "part-00001.csv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["top.csv"]  # no old version kept
