"""Hostile resumes: a re-used ``--work-dir`` must never reuse work that no longer applies.

A fragment's finished work (its partial top-k, counts and rejects) may be reused only when
everything that defines it is unchanged: the users of a ``--pairs all`` block, the content of a
pairs file (even rewritten with the same size and its mtime put back), the options. And a
resumed run must write everything an uninterrupted run writes, its rejects file included.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import batchrank
from batchrank.errors import DataError

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"


@pytest.fixture(scope="module")
def sample_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seed-preset bundle trained for one epoch on sample_data/."""
    from batchrank.training import train

    out = tmp_path_factory.mktemp("resume-bundle") / "model"
    train(SAMPLE / "ratings.parquet", out, preset="seed", epochs=1, verbose=0)
    return out


def _score(bundle: Path, out: Path, **options: Any) -> dict[str, Any]:
    return batchrank.score(model=bundle, out=out, progress="none", **options)


def _csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("user_id,movie_id\n" + "".join(f"{u},{m}\n" for u, m in rows))
    return path


@pytest.fixture(scope="module")
def candidates() -> list[tuple[str, str]]:
    """The sample candidates as text pairs."""
    t = pq.read_table(SAMPLE / "candidates.parquet").to_pydict()
    return [(str(u), str(m)) for u, m in zip(t["user_id"], t["movie_id"], strict=True)]


def test_changed_users_file_with_same_size_and_first_user_is_not_reused(
    sample_bundle: Path, tmp_path: Path
) -> None:
    users = tmp_path / "users.csv"
    work = tmp_path / "work"
    known = sorted(set(pq.read_table(SAMPLE / "ratings.parquet")["user_id"].to_pylist()))
    a, b, c, d, e = (str(u) for u in known[:5])
    assert len(b + c) == len(d + e)
    users.write_text(f"user_id\n{a}\n{b}\n{c}\n")
    _score(sample_bundle, tmp_path / "old.csv", pairs=["all"], users=users, work_dir=work)
    users.write_text(f"user_id\n{a}\n{d}\n{e}\n")  # same size, same first user
    resumed = _score(sample_bundle, tmp_path / "new.csv", pairs=["all"], users=users, work_dir=work)
    fresh = _score(sample_bundle, tmp_path / "fresh.csv", pairs=["all"], users=users)
    assert resumed["resume"]["fragments_resumed"] == 0
    assert resumed["inputs"][0]["users"] == 3
    assert (tmp_path / "new.csv").read_bytes() == (tmp_path / "fresh.csv").read_bytes()
    assert fresh["counts"] == resumed["counts"]


def test_pairs_file_rewritten_with_same_size_and_mtime_is_not_reused(
    sample_bundle: Path, tmp_path: Path, candidates: list[tuple[str, str]]
) -> None:
    pairs = _csv(tmp_path / "pairs.csv", candidates[:3000])
    work = tmp_path / "work"
    _score(sample_bundle, tmp_path / "old.parquet", pairs=[str(pairs)], work_dir=work)
    st = pairs.stat()
    # each user with the next row's movie: the same bytes in another order, other lists
    head = candidates[:3000]
    swapped = [(u, head[(i + 1) % len(head)][1]) for i, (u, _) in enumerate(head)]
    with pairs.open("r+") as f:  # rewritten in place: same inode
        f.write("user_id,movie_id\n" + "".join(f"{u},{m}\n" for u, m in swapped))
    os.utime(pairs, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert pairs.stat().st_size == st.st_size and pairs.stat().st_mtime_ns == st.st_mtime_ns
    resumed = _score(sample_bundle, tmp_path / "new.parquet", pairs=[str(pairs)], work_dir=work)
    _score(sample_bundle, tmp_path / "fresh.parquet", pairs=[str(pairs)])
    assert resumed["resume"]["fragments_resumed"] == 0
    new = pq.read_table(tmp_path / "new.parquet")
    assert new.equals(pq.read_table(tmp_path / "fresh.parquet"))


def test_resumed_run_writes_the_rejects_of_fragments_finished_before_the_failure(
    sample_bundle: Path, tmp_path: Path, candidates: list[tuple[str, str]]
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    first = list(candidates[:4000])
    first[7], first[300], first[3999] = ("", "12"), ("1003", "x1"), ("12y", "5")
    _csv(inputs / "a.csv", first)  # rejected rows, in the fragment that finishes
    second = list(candidates[4000:8000])
    second[11] = ("1003", "")
    broken = _csv(inputs / "b.csv", second)
    with broken.open("a") as f:
        f.write("1003,12,extra\n")  # a row with a field too many: the run fails in b.csv
    work = tmp_path / "work"
    options: dict[str, Any] = {"pairs": [str(inputs)], "chunk_rows": 1000}
    resumable: dict[str, Any] = {"rejects": tmp_path / "rejects.csv", "work_dir": work, **options}
    with pytest.raises(DataError, match=r"b\.csv row 4001"):
        _score(sample_bundle, tmp_path / "top.csv", **resumable)
    assert not (tmp_path / "rejects.csv").exists()
    _csv(inputs / "b.csv", second)  # fixed
    resumed = _score(
        sample_bundle,
        tmp_path / "top.csv",
        rejects=tmp_path / "rejects.csv",
        work_dir=work,
        **options,
    )
    assert resumed["resume"] == {"fragments": 2, "fragments_resumed": 1}
    reference = _score(
        sample_bundle, tmp_path / "ref.csv", rejects=tmp_path / "ref.rejects.csv", **options
    )
    assert (tmp_path / "rejects.csv").read_bytes() == (tmp_path / "ref.rejects.csv").read_bytes()
    assert (tmp_path / "rejects.csv").read_text().count("\n") == 1 + 4
    assert (tmp_path / "top.csv").read_bytes() == (tmp_path / "ref.csv").read_bytes()
    assert resumed["counts"] == reference["counts"]
