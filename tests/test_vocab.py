"""Id vocabularies: int and string ids, gaps, the OOV row, and id coercion."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchrank.errors import DataError
from batchrank.vocab import OOV_INDEX, Vocabulary, coerce_ids, id_kind_of


def test_int_ids_with_gaps_take_rows_in_id_order() -> None:
    vocab = Vocabulary.build(pa.array([500, 10, 30, 10, 7000, 30]), where="test")
    assert vocab.kind == "int"
    assert vocab.ids.to_pylist() == [10, 30, 500, 7000]
    assert len(vocab) == 4
    assert vocab.size == 5  # the OOV row
    idx = vocab.lookup(pa.array([10, 30, 500, 7000], pa.int64()))
    assert idx.tolist() == [1, 2, 3, 4]
    assert idx.dtype == np.int32
    assert vocab.id_at(idx).to_pylist() == [10, 30, 500, 7000]


def test_unseen_and_null_int_ids_map_to_the_oov_row() -> None:
    vocab = Vocabulary.build(pa.array([10, 20, 30]), where="test")
    # below, between, above the known ids; and a null
    idx = vocab.lookup(pa.array([5, 15, 20, 31, None], pa.int64()))
    assert idx.tolist() == [OOV_INDEX, OOV_INDEX, 2, OOV_INDEX, OOV_INDEX]
    assert OOV_INDEX == 0


def test_negative_and_large_int_ids() -> None:
    big = 2**62
    vocab = Vocabulary.build(pa.array([-3, big, 0]), where="test")
    assert vocab.ids.to_pylist() == [-3, 0, big]
    assert vocab.lookup(pa.array([big, -3, 1], pa.int64())).tolist() == [3, 1, 0]


def test_string_ids() -> None:
    vocab = Vocabulary.build(pa.array(["u-b", "u-a", "u-b", "ü"]), where="test")
    assert vocab.kind == "str"
    assert vocab.ids.to_pylist() == ["u-a", "u-b", "ü"]
    idx = vocab.lookup(pa.array(["ü", "u-a", "nobody", None]))
    assert idx.tolist() == [3, 1, OOV_INDEX, OOV_INDEX]


def test_dictionary_encoded_string_ids() -> None:
    arr = pa.array(["b", "a", "b"]).dictionary_encode()
    assert id_kind_of(arr, where="test") == "str"
    vocab = Vocabulary.build(arr, where="test")
    assert vocab.ids.to_pylist() == ["a", "b"]


def test_nulls_are_not_vocabulary_entries() -> None:
    vocab = Vocabulary.build(pa.array([3, None, 1]), where="test")
    assert vocab.ids.to_pylist() == [1, 3]


@pytest.mark.parametrize("kind", ["int", "str"])
def test_save_load_round_trip(tmp_path: Path, kind: str) -> None:
    values = pa.array([40, 2, 17]) if kind == "int" else pa.array(["x", "a", "m"])
    vocab = Vocabulary.build(values, where="test")
    vocab.save(tmp_path / "v.parquet", "user_id")
    back = Vocabulary.load(tmp_path / "v.parquet", "user_id")
    assert back.kind == kind
    assert back.ids.to_pylist() == vocab.ids.to_pylist()
    table = vocab.to_table("user_id")
    assert table.column_names == ["user_id", "index"]
    assert table.column("index").to_pylist() == [1, 2, 3]


def test_coerce_strings_that_are_integers() -> None:
    cast, bad = coerce_ids(pa.array(["10", " 20 ", "+30", "-4", None]), "int", where="w")
    assert cast.type == pa.int64()
    assert cast.to_pylist() == [10, 20, 30, -4, None]
    assert bad.tolist() == [False] * 5


def test_coerce_strings_that_are_not_integers() -> None:
    values = pa.array(["10", "abc", "1.5", "", None, "99999999999999999999"])
    cast, bad = coerce_ids(values, "int", where="w")
    assert cast.to_pylist() == [10, None, None, None, None, None]
    # present but unparsable (the null is not "bad"; it is missing)
    assert bad.tolist() == [False, True, True, True, False, True]


def test_coerce_ints_to_string_kind() -> None:
    cast, bad = coerce_ids(pa.array([7, 8], pa.int32()), "str", where="w")
    assert cast.to_pylist() == ["7", "8"]
    assert not bad.any()
    # so an int column finds its rows in a string vocabulary
    vocab = Vocabulary.build(pa.array(["7", "x"]), where="test")
    assert vocab.lookup(cast).tolist() == [1, OOV_INDEX]


def test_coerce_widens_small_int_types() -> None:
    cast, _ = coerce_ids(pa.array([1, 2], pa.int8()), "int", where="w")
    assert cast.type == pa.int64()


@pytest.mark.parametrize(
    "values",
    [
        pa.array([1.0, 2.5]),
        pa.array([1.0, 2.0]),  # whole floats are still floats: refuse, don't guess
        pa.array([True, False]),
        pa.array([0, 1], pa.timestamp("s")),
    ],
    ids=["float", "whole-float", "bool", "timestamp"],
)
def test_non_id_types_raise_data_error(values: pa.Array) -> None:
    with pytest.raises(DataError, match=r"ratings\.csv: column `user_id`: ids must be integers"):
        coerce_ids(values, "int", where="ratings.csv: column `user_id`")
    with pytest.raises(DataError, match=re.escape(str(values.type))):
        Vocabulary.build(values, where="ratings.csv: column `user_id`")


def _searchsorted_lookup(vocab: Vocabulary, values: np.ndarray) -> np.ndarray:
    """The simple path: binary search in the sorted ids."""
    ids = vocab.ids.to_numpy()
    pos = np.minimum(np.searchsorted(ids, values), len(ids) - 1)
    return np.where(ids[pos] == values, pos + 1, OOV_INDEX).astype(np.int32)


_INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@settings(max_examples=200, deadline=None)
@given(
    base=_INT64,
    offsets=st.lists(st.integers(0, 5000), min_size=1, max_size=60),
    probes=st.lists(st.one_of(_INT64, st.integers(-10, 5010)), max_size=80),
)
def test_direct_lookup_matches_the_binary_search(
    base: int, offsets: list[int], probes: list[int]
) -> None:
    # ids in a bounded range anywhere in int64 (near both ends too); probes in and around it
    # and anywhere at all (the uint64 distance must wrap and clamp, never alias a known id)
    ids = sorted({min(max(base, -(2**63)), 2**63 - 1 - 5000) + o for o in offsets})
    vocab = Vocabulary(ids=pa.array(ids, pa.int64()), kind="int")
    assert vocab.direct is not None
    lo = ids[0]
    values = [v if not -10 <= v <= 5010 else lo + v for v in probes] + ids
    values = [min(max(v, -(2**63)), 2**63 - 1) for v in values]
    arr = np.array(values, dtype=np.int64)
    got = vocab.lookup(pa.array(arr))
    assert got.dtype == np.int32
    assert got.tolist() == _searchsorted_lookup(vocab, arr).tolist()


def test_wide_or_string_vocabularies_have_no_direct_index() -> None:
    wide = Vocabulary(ids=pa.array([0, 2**40], pa.int64()), kind="int")
    assert wide.direct is None
    assert wide.lookup(pa.array([2**40, 5], pa.int64())).tolist() == [2, 0]
    assert Vocabulary.build(pa.array(["a", "b"]), where="t").direct is None
