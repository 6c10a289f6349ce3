"""Redis Cluster hash slots, computed column-wise: ``CRC16(key) mod 16384`` with hash tags.

The rules are the cluster specification's (``CLUSTER KEYSLOT`` agrees; tests/sinks check it):
CRC16-XMODEM (polynomial 0x1021, initial value 0) of the key, or, when the key holds a ``{``
followed later by a ``}`` with at least one byte between them, of the bytes between the first
``{`` and the first ``}`` after it. :func:`hash_slots` does it for a whole Arrow column of keys
at once: the tags are found with two ``searchsorted`` over the positions of ``{`` and ``}`` in
the keys' data buffer, and the CRC advances one byte position at a time for every key
together (about 35 numpy steps for a batch of ``batchrank:job:generation:user`` keys).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["SLOTS", "hash_slots", "key_slot", "prefixed_slots"]

SLOTS = 16384
"""Hash slots of a Redis Cluster."""


def _crc_table() -> np.ndarray:
    table = np.zeros(256, np.int64)
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table[byte] = crc & 0xFFFF
    return table


_TABLE = _crc_table().astype(np.int32)
_OPEN, _CLOSE = ord("{"), ord("}")


def _buffers(keys: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """The keys' bytes and their ``len + 1`` offsets into them."""
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    if pa.types.is_string(keys.type) or pa.types.is_large_string(keys.type):
        keys = keys.view(pa.large_binary() if pa.types.is_large_string(keys.type) else pa.binary())
    if not (pa.types.is_binary(keys.type) or pa.types.is_large_binary(keys.type)):
        keys = keys.cast(pa.binary())
    width = np.int64 if pa.types.is_large_binary(keys.type) else np.int32
    _, offsets_buf, data_buf = keys.buffers()
    offsets = np.frombuffer(offsets_buf, width)[keys.offset : keys.offset + len(keys) + 1]
    data = np.frombuffer(data_buf, np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    return data, offsets.astype(np.int64)


def _tagged(data: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each key's hashed byte range: its hash tag's, where it has one, else the whole key."""
    opens = np.flatnonzero(data == _OPEN)
    closes = np.flatnonzero(data == _CLOSE)
    if not len(opens) or not len(closes):
        return lo, hi
    k = np.searchsorted(opens, lo)
    first_open = opens[np.minimum(k, len(opens) - 1)]
    tag = (k < len(opens)) & (first_open < hi)
    j = np.searchsorted(closes, first_open + 1)
    first_close = closes[np.minimum(j, len(closes) - 1)]
    tag &= (j < len(closes)) & (first_close < hi) & (first_close > first_open + 1)
    return np.where(tag, first_open + 1, lo), np.where(tag, first_close, hi)


def _crc(data: np.ndarray, lo: np.ndarray, hi: np.ndarray, crc: np.ndarray) -> np.ndarray:
    """``crc`` advanced over each key's bytes ``data[lo:hi]``, one byte position at a time."""
    lengths = hi - lo
    if not len(data):
        return crc
    last = len(data) - 1
    for step in range(int(lengths.max(initial=0))):
        byte = data[np.minimum(lo + step, last)].astype(np.int32)
        advanced = ((crc << 8) & 0xFFFF) ^ _TABLE[((crc >> 8) ^ byte) & 0xFF]
        crc = np.where(lengths > step, advanced, crc)
    return crc


def hash_slots(keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The hash slot of every key of a string or binary column (in ``[0, 16384)``)."""
    data, offsets = _buffers(keys)
    lo, hi = _tagged(data, offsets[:-1], offsets[1:])
    return _crc(data, lo, hi, np.zeros(len(lo), np.int32)) & (SLOTS - 1)


def prefixed_slots(prefix: str, suffixes: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The hash slots of the keys ``prefix + suffix``, the prefix's CRC computed once.

    A prefix holding a whole hash tag puts every key in its slot; a ``{`` without a ``}`` in
    the prefix, or a ``{`` in a suffix, takes the general path over the whole keys.
    """
    head = prefix.encode()
    n = len(suffixes)
    start = head.find(b"{")
    if start >= 0 and head.find(b"}", start + 2) >= 0:
        return np.full(n, key_slot(head), np.int32)
    data, offsets = _buffers(suffixes)
    if start >= 0 or _OPEN in data:
        return hash_slots(pc.binary_join_element_wise(prefix, suffixes, ""))
    init = _crc(np.frombuffer(head, np.uint8), np.zeros(1, np.int64), np.full(1, len(head)),
                np.zeros(1, np.int32))  # fmt: skip
    crc = _crc(data, offsets[:-1], offsets[1:], np.repeat(init, n))
    return crc & (SLOTS - 1)


def key_slot(key: bytes | str) -> int:
    """The hash slot of one key."""
    return int(hash_slots(pa.array([key if isinstance(key, bytes) else key.encode()]))[0])
