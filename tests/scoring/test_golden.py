"""Golden bytes: the sha256 of scored sample outputs, pinned for both engines.

The bundle is the session's ``sample_bundle`` (two seeded epochs on ``sample_data/``), so these
digests change only when the bytes a run writes change: the ranking contract, a writer, the
model, or training. A refactor must leave them as they are; a deliberate contract change
updates them here, in the same commit, and says why.

Cases: the sample candidates as long Parquet; the same candidates as CSV with a few bad rows
(null, unparsable, signed and zero-padded ids) into long CSV plus the rejects file; and
``--pairs all`` for a user subset as nested JSONL. Each runs on the local engine and, marked
``ray``, on the Ray engine (one small local Ray instance, as in ``test_ray_engine.py``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import batchrank
from batchrank.bundle import load_bundle

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"

GOLDEN: dict[str, str] = {
    "long.parquet": "4d32c883a8ff2f12a8c12118420c9c77dedaae9d8a012eba026b8457740ee8fb",
    "long.csv": "3945651a428c0a981191d78ed626dac6dc10ba608c3b433d0d192c3def9d9581",
    "long.rejects.csv": "0dbd76209daa8c63ac747dd476b1b1af32f6cb38d96506350d30d7275be87284",
    "all.jsonl": "761ea32536400426cd73b0e3fe6465be0e805de7069974562849eaadbe18c49c",
}
"""sha256 of each output (and rejects file), identical for every engine."""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sample candidates, plus a CSV copy of them with bad rows, plus a user subset."""
    folder = tmp_path_factory.mktemp("golden-inputs")
    table = pq.read_table(SAMPLE / "candidates.parquet").to_pydict()
    users = [str(u) for u in table["user_id"]]
    movies = [str(m) for m in table["movie_id"]]
    # null user, unparsable movie, signed and zero-padded ids (kept), null movie
    users[5], movies[17], users[40], movies[41], movies[900] = "", "x12", "+1003", "0042", ""
    lines = ["user_id,movie_id", *(f"{u},{m}" for u, m in zip(users, movies, strict=True))]
    csv = folder / "candidates-bad.csv"
    csv.write_text("\n".join(lines) + "\n")
    subset = folder / "users.csv"
    subset.write_text("user_id\n1299\n1000\n1003\n1010\n1100\n1200\n")
    return {"parquet": SAMPLE / "candidates.parquet", "csv": csv, "users": subset}


def _digest(path: Path, inputs: dict[str, Path], fingerprint: str) -> str:
    """sha256 of an output's bytes, less the two things a fresh bundle or tmp folder changes.

    The bundle's fingerprint hashes its Keras zip, whose timestamps differ per training run, and
    a Parquet output records it in its footer (also inside the base64 Arrow schema): for
    Parquet, hash every byte before the footer (the pages: every value, encoding and
    compression) and check the footer's metadata apart. Rejects name the input file: its
    folder becomes ``<in>``.
    """
    data = path.read_bytes()
    if path.suffix == ".parquet":
        meta = pq.read_metadata(path).metadata
        assert meta[b"batchrank.model_fingerprint"] == fingerprint.encode()
        footer = int.from_bytes(data[-8:-4], "little")
        data = data[: len(data) - 8 - footer]
    elif path.name.endswith(".rejects.csv"):
        data = data.replace(str(inputs["csv"].parent).encode(), b"<in>")
    return hashlib.sha256(data).hexdigest()


def _score_all(bundle: Path, inputs: dict[str, Path], out: Path, engine: str) -> dict[str, str]:
    common: dict[str, Any] = {"model": bundle, "engine": engine, "progress": "none"}
    if engine == "ray":
        common["concurrency"] = 1
    batchrank.score(pairs=[str(inputs["parquet"])], out=out / "long.parquet", **common)
    batchrank.score(
        pairs=[str(inputs["csv"])],
        out=out / "long.csv",
        rejects=out / "long.rejects.csv",
        chunk_rows=4000,
        **common,
    )
    batchrank.score(
        pairs=["all"],
        users=inputs["users"],
        out=out / "all.jsonl",
        layout="nested",
        top_k=5,
        chunk_rows=700,
        **common,
    )
    fingerprint = load_bundle(bundle, model=False).fingerprint
    return {name: _digest(out / name, inputs, fingerprint) for name in GOLDEN}


def test_local_engine_writes_the_golden_bytes(
    sample_bundle: Path, inputs: dict[str, Path], tmp_path: Path
) -> None:
    assert _score_all(sample_bundle, inputs, tmp_path, "local") == GOLDEN


@pytest.mark.ray
def test_ray_engine_writes_the_golden_bytes(
    ray_session: Any, sample_bundle: Path, inputs: dict[str, Path], tmp_path: Path
) -> None:
    assert _score_all(sample_bundle, inputs, tmp_path, "ray") == GOLDEN
