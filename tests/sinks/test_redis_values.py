"""The Redis values are the nested layout's JSON, byte for byte, and the SET bytes parse back."""

from __future__ import annotations

import json
from pathlib import Path

import hiredis
import numpy as np
import pyarrow as pa
import pytest

from batchrank.scoring.writers import OutputWriter
from batchrank.sinks.redis.target import ValueFormat
from batchrank.sinks.redis.values import key_values, set_commands


def ranked(ids: str = "int") -> pa.Table:
    """Four users with awkward values: NaN and infinite scores, quotes, backslashes, control
    characters, non-ASCII and missing titles, lists of different lengths."""
    users = [7, 7, 7, 8, 9, 9, 12]
    movies = [3, 1, 2, 3, 5, 1, 4]
    titles = {
        1: 'A "quoted" \\ title',
        2: "tab\there\x01",
        3: "Amélie \u2028 (2001)",
        4: None,
        5: "",
    }
    score = np.array([0.9, np.nan, 1e-8, 123456789.0, np.inf, -0.0, 0.5], np.float32)
    table = pa.table(
        {
            "user_id": pa.array(users, pa.int64()),
            "rank": pa.array([1, 2, 3, 1, 1, 2, 1], pa.int32()),
            "movie_id": pa.array(movies, pa.int64()),
            "title": pa.array([titles[m] for m in movies], pa.string()),
            "stars": pa.array(
                np.clip(1 + 4 * np.nan_to_num(score, posinf=1.0, neginf=0.0), 0, 5), pa.float32()
            ),
            "score": pa.array(score, pa.float32()),
        }
    )
    if ids == "str":
        for name in ("user_id", "movie_id"):
            col = table.column(name).cast(pa.string())
            col = pa.array([f'u"{v}\\' for v in col.to_pylist()])
            table = table.set_column(table.schema.get_field_index(name), name, col)
    return table


@pytest.mark.parametrize("ids", ["int", "str"])
def test_values_are_the_nested_jsonl_items_byte_for_byte(tmp_path: Path, ids: str) -> None:
    table = ranked(ids)
    out = tmp_path / "top.jsonl"
    with OutputWriter(out, format="jsonl", layout="nested") as w:
        w.write(table)
        w.close(commit=True)
    lines = out.read_bytes().splitlines()
    kv = key_values(table, "p:g:", "json")
    assert kv.height == len(lines) == 4
    for line, (key, value) in zip(lines, kv.iter_rows(), strict=True):
        record = json.loads(line)
        assert key == f"p:g:{record['user_id']}"
        assert json.loads(value) == record["items"]
        items = line[line.index(b'"items":') + len(b'"items":') : -1]
        assert value.encode() == items  # the writer's bytes, floats included


def parse(data: bytes) -> list[list[bytes]]:
    reader = hiredis.Reader()
    reader.feed(data)
    out = []
    while (reply := reader.gets()) is not False:
        out.append(reply)
    return out


@pytest.mark.parametrize("value", ["json", "compact"])
def test_set_commands_parse_back_to_the_same_keys_and_values(value: ValueFormat) -> None:
    table = ranked()
    kv = key_values(table, "batchrank:x:run1:", value)
    encoded = set_commands(table, "batchrank:x:run1:", value)
    commands = parse(bytes(encoded.data))
    assert [c[0] for c in commands] == [b"SET"] * 4
    assert [c[1].decode() for c in commands] == kv["key"].to_list()
    assert [c[2].decode() for c in commands] == kv["value"].to_list()
    assert encoded.users == 4
    assert encoded.value_bytes == sum(len(v.encode()) for v in kv["value"])
    if value == "compact":
        assert json.loads(commands[0][2]) == [3, 1, 2]


def test_bytes_do_not_depend_on_how_users_are_batched() -> None:
    table = ranked()
    whole = bytes(set_commands(table, "p:", "json").data)
    parts = b"".join(
        bytes(set_commands(table.slice(lo, hi - lo), "p:", "json").data)
        for lo, hi in [(0, 3), (3, 4), (4, 7)]
    )
    assert whole == parts


def test_a_movie_with_two_titles_in_one_batch_keeps_each_rows_title() -> None:
    table = ranked()
    titles = table.column("title").to_pylist()
    titles[3] = "Another title for movie 3"
    table = table.set_column(3, "title", pa.array(titles))
    values = key_values(table, "p:", "json")["value"].to_list()
    assert json.loads(values[0])[0]["title"] == "Amélie \u2028 (2001)"
    assert json.loads(values[1])[0]["title"] == "Another title for movie 3"
