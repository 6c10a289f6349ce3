"""The Ray Data engine: same bytes, counts and rejects as the local engine, on a local Ray.

The tests marked ``ray`` share one local Ray instance (``ray.init(num_cpus=2)``, started once)
and are skipped when ``ray`` is not importable. The others test the engine's pure helpers.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from batchrank.errors import ConfigError, DataError, ModelError
from batchrank.scoring.api import score
from batchrank.scoring.ray import driver, session, worker

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def bundle(sample_bundle: Path) -> Path:
    """The session's sample-data bundle (tests/scoring/conftest.py)."""
    return sample_bundle


@pytest.fixture(scope="module")
def mixed_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample candidates spread over Parquet and CSV files, with bad rows.

    - ``a.parquet``: int ids, small row groups;
    - ``b.parquet``: the same kind of rows with string ids (a second Ray read group);
    - ``c.csv``: null, unparsable and zero-padded ids;
    - ``d/e.parquet``: more rows plus 500 rows of ``a.parquet`` again (duplicates);
    - ``f.csv``: the rest, and two rows with a missing id at the end.
    """
    src = pq.read_table(SAMPLE / "candidates.parquet")
    folder = tmp_path_factory.mktemp("mixed")
    parts = np.array_split(np.arange(src.num_rows), 5)
    pq.write_table(src.take(parts[0]), folder / "a.parquet", row_group_size=1000)
    b = src.take(parts[1])
    pq.write_table(
        pa.table({c: b.column(c).cast(pa.string()) for c in ("user_id", "movie_id")}),
        folder / "b.parquet",
    )
    c = src.take(parts[2]).to_pydict()
    users = [str(x) for x in c["user_id"]]
    movies = [str(x) for x in c["movie_id"]]
    users[3], movies[10], users[20], movies[30], users[40] = "", "abc", "12x", "", "007"
    lines = ["user_id,movie_id", *(f"{u},{m}" for u, m in zip(users, movies, strict=True))]
    (folder / "c.csv").write_text("\n".join(lines) + "\n")
    (folder / "d").mkdir()
    pq.write_table(
        pa.concat_tables([src.take(parts[3]), src.take(parts[0][:500])]), folder / "d" / "e.parquet"
    )
    pacsv.write_csv(src.take(parts[4]), folder / "f.csv")
    with (folder / "f.csv").open("a") as f:
        f.write(",1\n5,\n")
    return folder


def _run_both(
    tmp_path: Path, bundle: Path, pairs: list[str], suffix: str = ".parquet", **options: Any
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Path]]:
    """Score with both engines; return both manifests and the Ray run's paths by kind."""
    manifests = {}
    paths: dict[str, Path] = {}
    for engine in ("local", "ray"):
        out = tmp_path / f"{engine}{suffix}"
        rejects = tmp_path / f"{engine}.rejects.csv"
        manifests[engine] = score(
            model=bundle,
            pairs=pairs,
            out=out,
            rejects=rejects if "all" not in pairs else None,
            engine=engine,
            progress="none",
            **options,
        )
        paths[engine] = out
        paths[f"{engine}_rejects"] = rejects
    return manifests["local"], manifests["ray"], paths


def _assert_same(local: dict[str, Any], ray: dict[str, Any], paths: dict[str, Path]) -> None:
    assert ray["engine"] == "ray"
    assert ray["counts"] == local["counts"]
    assert ray["output"]["sha256"] == local["output"]["sha256"]
    assert paths["ray"].read_bytes() == paths["local"].read_bytes()
    if paths["local_rejects"].exists():
        assert paths["ray_rejects"].read_bytes() == paths["local_rejects"].read_bytes()


# ---------------------------------------------------------------------------------------------
# end to end on a local Ray


@pytest.mark.ray
def test_sample_data_matches_local_engine_even_when_a_worker_dies(
    ray_session: Any, bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "crashed"

    class CrashOnce(worker.Scorer):
        """Kills its actor's process in the middle of the run's first batch, once."""

        def __call__(self, batch: pa.Table) -> pa.Table:
            if not marker.exists():
                marker.touch()
                os._exit(1)
            return super().__call__(batch)

    monkeypatch.setattr(worker, "Scorer", CrashOnce)
    pairs = [str(SAMPLE / "candidates.parquet")]
    local, ray, paths = _run_both(tmp_path, bundle, pairs, chunk_rows=6000, concurrency=1)
    assert marker.exists()  # the actor died, was restarted, and its batch was retried
    _assert_same(local, ray, paths)
    assert ray["counts"]["rows_read"] == 17988
    assert ray["counts"]["rows_skipped_unknown_user"] + ray["counts"]["rows_skipped_unknown_movie"]


@pytest.mark.ray
def test_mixed_parquet_and_csv_match_local_engine(
    ray_session: Any, bundle: Path, mixed_inputs: Path, tmp_path: Path
) -> None:
    # small chunks: several batches per file, and batches that span two files
    local, ray, paths = _run_both(
        tmp_path,
        bundle,
        [str(mixed_inputs)],
        suffix=".jsonl",
        layout="nested",
        chunk_rows=2500,
        top_k=7,
        concurrency=2,  # batches finish out of order; the driver must still see them in order
    )
    _assert_same(local, ray, paths)
    assert ray["counts"]["rows_rejected"] == 6
    assert set(ray["counts"]["rejected_by_reason"].values()) == {1, 2}
    rejects = paths["ray_rejects"].read_text().splitlines()
    assert rejects[1] == f'"{mixed_inputs / "c.csv"}",4,,"258","null_user_id"'
    assert rejects[-1].startswith(f'"{mixed_inputs / "f.csv"}",3599,"5",,')


@pytest.mark.ray
def test_cross_join_matches_local_engine(ray_session: Any, bundle: Path, tmp_path: Path) -> None:
    users = tmp_path / "users.csv"
    users.write_text("user_id\n1000\n1003\n1010\n1299\n")
    local, ray, paths = _run_both(
        tmp_path,
        bundle,
        ["all"],
        suffix=".csv",
        users=users,
        top_k=5,
        chunk_rows=300,
        concurrency=1,
    )
    _assert_same(local, ray, paths)
    assert ray["counts"]["rows_read"] == ray["inputs"][0]["users"] * ray["inputs"][0]["movies"]


@pytest.mark.ray
def test_unknown_fail_names_the_file_row_and_commits_nothing(
    ray_session: Any, bundle: Path, mixed_inputs: Path, tmp_path: Path
) -> None:
    messages = {}
    for engine in ("local", "ray"):
        out = tmp_path / engine / "top.parquet"
        with pytest.raises(DataError) as info:
            score(
                model=bundle,
                pairs=[str(mixed_inputs)],
                out=out,
                rejects=tmp_path / engine / "rejects.csv",
                engine=engine,
                unknown="fail",
                max_reject_fraction=1.0,
                chunk_rows=2000,
                progress="none",
                concurrency=1,
            )
        messages[engine] = str(info.value)
        assert not out.exists()
        assert not out.parent.exists() or not any(out.parent.iterdir())
    assert messages["ray"] == messages["local"]
    assert "a.parquet row " in messages["ray"]


@pytest.mark.ray
def test_a_csv_ray_cannot_parse_is_a_data_error(
    ray_session: Any, bundle: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,movie_id\n1000,12\n1003,14,99\n")
    with pytest.raises(DataError, match="cannot read the input files on Ray"):
        score(
            model=bundle, pairs=[str(bad)], out=tmp_path / "top.csv", engine="ray", progress="none"
        )
    assert not (tmp_path / "top.csv").exists()


@pytest.mark.ray
@pytest.mark.slow
def test_bucket_combine_matches_driver_combine(
    ray_session: Any,
    bundle: Path,
    mixed_inputs: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from batchrank.scoring import api

    monkeypatch.setattr(
        api, "_run_engine", lambda ctx: driver.run_ray(ctx, combine="buckets", buckets=4)
    )
    # one actor: a second adds its start-up, not a path (out-of-order batches reach the same
    # _Collector, tested with two actors above); 4000-row chunks still split every bucket
    local, ray, paths = _run_both(
        tmp_path, bundle, [str(mixed_inputs)], chunk_rows=4000, concurrency=1
    )
    _assert_same(local, ray, paths)


# ---------------------------------------------------------------------------------------------
# helpers, without Ray


def test_missing_ray_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"batchrank\[ray\]"):
        driver.run_ray(SimpleNamespace(spec=None))  # type: ignore[arg-type]


def test_a_fixed_pool_leaves_a_cpu_for_reading() -> None:
    assert session.actor_cpus(None, 2) is None
    assert session.actor_cpus(3, 16) is None
    assert session.actor_cpus(2, 2) == 0.5
    assert session.actor_cpus(1, 1) == 0.0
    assert session.actor_cpus(4, 0) is None


def test_an_actors_data_error_comes_back_with_the_files_row() -> None:
    error = DataError.at("/d/a.csv", 3, "unknown user id 7 (--unknown fail)")
    assert (error.file, error.row) == ("/d/a.csv", 3)
    data = worker.error_data(error, seg=1)
    rebuilt = driver._error(json.loads(json.dumps(data)), bases=[0, 100])
    assert isinstance(rebuilt, DataError)
    assert str(rebuilt) == "/d/a.csv row 103: unknown user id 7 (--unknown fail)"
    assert (rebuilt.file, rebuilt.row) == ("/d/a.csv", 103)
    model = driver._error(worker.error_data(ModelError("/m: differs"), seg=-1), bases=[])
    assert type(model) is ModelError and str(model) == "/m: differs"


def test_rejects_are_spooled_and_listed_file_by_file_in_input_order(tmp_path: Path) -> None:
    ctx = SimpleNamespace(
        files=[SimpleNamespace(path=tmp_path / f"f{i}") for i in range(4)],
        spec=SimpleNamespace(rejects=tmp_path / "rejects.csv"),
        spill_dir=tmp_path / "spill",
    )
    collect = driver._Collector(ctx, SimpleNamespace(counts={}), None)  # type: ignore[arg-type]

    def rejects(file: int, row: int) -> pa.Table:
        return pa.table(
            {
                "file": [f"f{file}"],
                "row": pa.array([row], pa.int64()),
                "user_id": ["x"],
                "movie_id": ["1"],
                "reason": ["bad_user_id"],
                "_seg": pa.array([0], pa.int32()),
            }
        )

    # files 0 and 2 are Parquet (one read), 1 and 3 CSV (another); the reads interleave
    for fi, row, base in ((1, 1, 0), (0, 2, 10), (3, 1, 0), (0, 1, 20), (2, 5, 0)):
        collect._rejects(rejects(fi, row), [[fi, 1]], [base])
    tables = [pa.ipc.open_stream(p.read_bytes()).read_all() for p in collect.reject_parts()]
    got = [(t.column("file")[0].as_py(), t.column("row")[0].as_py()) for t in tables]
    assert got == [("f0", 12), ("f0", 21), ("f1", 1), ("f2", 5), ("f3", 1)]


def test_merge_group_keeps_markers_and_reduces_buckets() -> None:
    schema = worker.output_schema(pa.int64(), pa.int64())
    rows = pa.table(
        {
            "user_id": [1, 1, 1, 2],
            "movie_id": [10, 11, 10, 10],
            "score": pa.array([0.5, 0.9, 0.5, 0.1], pa.float32()),
            "stars": pa.array([3.0, 4.6, 3.0, 1.4], pa.float32()),
            "_bucket": pa.array([1, 1, 1, 1], pa.int32()),
            "_meta": pa.nulls(4, pa.binary()),
            "_rejects": pa.nulls(4, pa.binary()),
        },
        schema=schema,
    )
    merged = worker.merge_group(rows, 1)
    assert merged.schema == schema
    assert merged.select(["user_id", "movie_id"]).to_pylist() == [
        {"user_id": 1, "movie_id": 11},
        {"user_id": 2, "movie_id": 10},
    ]
    marker = rows.slice(0, 1).set_column(4, "_bucket", pa.array([-1], pa.int32()))
    assert worker.merge_group(marker, 1) is marker
    buckets = worker.bucket_of(pa.array(["a", "b", "a"]), 8).to_pylist()
    assert buckets[0] == buckets[2] and all(0 <= b < 8 for b in buckets)
    assert worker.bucket_of(pa.array([3, 10, -1]), 4).to_pylist() == [3, 2, 3]


def test_read_errors_become_data_errors_by_exception_type() -> None:
    exceptions = pytest.importorskip("ray.exceptions")

    def task_error(cause: Exception) -> BaseException:
        return exceptions.RayTaskError("f", "tb", cause, "ray::T", 1, "127.0.0.1")

    found = driver.read_error(task_error(pa.ArrowInvalid("Parquet magic bytes not found")))
    assert isinstance(found, DataError) and "magic bytes" in str(found)
    try:
        try:
            raise task_error(ValueError("Failed to read CSV file: /d/x.csv."))
        except Exception as e:
            raise RuntimeError("wrapped") from e
    except RuntimeError as outer:
        found = driver.read_error(outer)
    assert isinstance(found, DataError)
    assert str(found).startswith("cannot read the input files on Ray (Failed to read CSV file")
    assert driver.read_error(task_error(KeyError("x"))) is None
    assert driver.read_error(RuntimeError("plain")) is None
    bug = driver._error({"type": "bug", "message": "KeyError: 'x'", "traceback": "tb"}, [])
    assert not isinstance(bug, DataError) and "a Ray scoring actor failed: KeyError" in str(bug)
