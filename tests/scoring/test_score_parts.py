"""`--max-rows-per-file` end to end: deterministic parts, the manifest's files, discovery.

The golden-style check: a folder of parts holds exactly the rows of the single file the same
run writes without the option (for CSV, byte for byte once the headers are dropped), and its
bytes do not depend on the chunk size, the batch size or the engine.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import batchrank
from batchrank.scoring.parts import PART_MARKER, list_parts

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"
CANDS = SAMPLE / "candidates.parquet"
MOVIES = SAMPLE / "movies.parquet"


def score(bundle: Path, out: Path, **options: Any) -> dict[str, Any]:
    options.setdefault("pairs", [str(CANDS)])
    return batchrank.score(model=bundle, items=MOVIES, out=out, progress="none", **options)


def parts_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in list_parts(folder)}


def test_parts_do_not_depend_on_chunk_or_batch_size(sample_bundle: Path, tmp_path: Path) -> None:
    a = score(sample_bundle, tmp_path / "a.parquet", max_rows_per_file=333)
    b = score(
        sample_bundle,
        tmp_path / "b.parquet",
        max_rows_per_file=333,
        chunk_rows=1000,
        batch_size=100,
        memory_budget_mb=0.05,  # spills: the results come back in other tables
    )
    assert b["topk"]["spilled"] and not a["topk"]["spilled"]
    assert parts_bytes(tmp_path / "a.parquet") == parts_bytes(tmp_path / "b.parquet")
    assert a["output"]["sha256"] == b["output"]["sha256"]
    assert a["output"]["parts"] == len(list_parts(tmp_path / "a.parquet")) == 10  # 3000 / 330


@pytest.mark.parametrize(
    ("name", "options"),
    [("top.parquet", {}), ("top.csv", {}), ("top.jsonl", {"layout": "nested", "top_k": 7})],
)
def test_concatenated_parts_are_the_single_files_rows(
    sample_bundle: Path, tmp_path: Path, name: str, options: dict[str, Any]
) -> None:
    single = tmp_path / "single" / name
    folder = tmp_path / "parts" / name
    one = score(sample_bundle, single, **options)
    many = score(sample_bundle, folder, max_rows_per_file=41, **options)
    if single.suffix == ".parquet":
        rows = pa.concat_tables([pq.read_table(p) for p in list_parts(folder)])
        assert rows.equals(pq.read_table(single))
    else:
        drop = 1 if single.suffix == ".csv" else 0
        body = b"".join(
            b"".join(p.read_bytes().splitlines(keepends=True)[drop:]) for p in list_parts(folder)
        )
        assert body == b"".join(single.read_bytes().splitlines(keepends=True)[drop:])
    assert many["counts"] == one["counts"]
    assert sum(f["users"] for f in many["files"]) == one["counts"]["users_written"]


def test_the_manifest_lists_every_data_file(sample_bundle: Path, tmp_path: Path) -> None:
    single = tmp_path / "top.parquet"
    one = score(sample_bundle, single)
    (entry,) = one["files"]
    data = single.read_bytes()
    assert entry == {
        "path": "top.parquet",
        "bytes": len(data),
        "rows": 3000,
        "users": 300,
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    assert one["output"]["sha256"] == entry["sha256"] and one["output"]["parts"] is None

    folder = tmp_path / "parts.parquet"
    many = score(sample_bundle, folder, max_rows_per_file=1000)
    on_disk = json.loads((tmp_path / "parts.parquet.manifest.json").read_text())
    assert on_disk["files"] == many["files"]
    assert [f["path"] for f in many["files"]] == [
        f"parts.parquet/part-0000{i}.parquet" for i in range(3)
    ]
    for f in many["files"]:
        data = (tmp_path / f["path"]).read_bytes()
        assert f["sha256"] == hashlib.sha256(data).hexdigest() and f["bytes"] == len(data)
        assert f["rows"] == pq.read_metadata(tmp_path / f["path"]).num_rows == 1000
        assert f["users"] == 100
    assert many["output"]["bytes"] == sum(f["bytes"] for f in many["files"])
    assert many["options"]["max_rows_per_file"] == 1000
    assert one["rejects_file"] is None and many["rejects_file"] is None


def test_the_manifest_lists_the_rejects_file(sample_bundle: Path, tmp_path: Path) -> None:
    lines = (SAMPLE / "candidates.csv").read_text().splitlines()
    lines[3], lines[9] = ",12", "1003,x12"  # a null user, an unparsable movie
    bad = tmp_path / "cands.csv"
    bad.write_text("\n".join(lines) + "\n")
    rejects = tmp_path / "elsewhere" / "rejects.csv"
    m = score(sample_bundle, tmp_path / "out" / "top.csv", pairs=[str(bad)], rejects=rejects)
    data = rejects.read_bytes()
    assert len(data.splitlines()) == 1 + 2  # the header and the two rows
    assert m["rejects_file"] == {
        "path": "../elsewhere/rejects.csv",
        "bytes": len(data),
        "rows": 2,
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def test_discovery_skips_folders_of_parts(sample_bundle: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shutil.copy(CANDS, inputs / "cands.parquet")
    # an export written beside the candidates (named explicitly, so allowed)
    score(
        sample_bundle,
        inputs / "top.parquet",
        pairs=[str(inputs / "cands.parquet")],
        max_rows_per_file=500,
    )
    assert len(list_parts(inputs / "top.parquet")) == 6
    for pairs in ([str(inputs)], [str(inputs / "**" / "*.parquet")], [str(inputs / "*.parquet")]):
        m = score(sample_bundle, tmp_path / "again.parquet", pairs=pairs)
        assert [i["path"] for i in m["inputs"]] == [str(inputs / "cands.parquet")], pairs
    # named explicitly, a folder of parts is read, as an explicit file is
    m = score(sample_bundle, tmp_path / "read.parquet", pairs=[str(inputs / "top.parquet")])
    assert len(m["inputs"]) == 6
    # the marker alone is enough: a folder copied without its manifest is still ours
    (inputs / "top.parquet.manifest.json").unlink()
    assert (inputs / "top.parquet" / PART_MARKER).is_file()
    m = score(sample_bundle, tmp_path / "again.parquet", pairs=[str(inputs)])
    assert len(m["inputs"]) == 1


@pytest.mark.ray
def test_ray_engine_writes_the_same_parts(
    ray_session: Any, sample_bundle: Path, tmp_path: Path
) -> None:
    local = score(sample_bundle, tmp_path / "local.csv", max_rows_per_file=250)
    ray = score(
        sample_bundle, tmp_path / "ray.csv", max_rows_per_file=250, engine="ray", concurrency=1
    )
    assert parts_bytes(tmp_path / "local.csv") == parts_bytes(tmp_path / "ray.csv")
    assert local["output"]["sha256"] == ray["output"]["sha256"]
