"""A bundle folder's files: their names, the fingerprint over them, and reading them back.

The fingerprint is a sha256 over everything that determines scores: ``model.keras``,
``weights.npz``, the vocabularies (titles included) and the metadata entries in
:data:`SCORED_METADATA`. The readers turn a damaged file into one
:class:`~batchrank.errors.ModelError` line naming it; the weights come back 64-byte aligned so
that JAX uses them in place. :mod:`batchrank.bundle` writes and loads the bundle with these.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from batchrank.bundle_checks import check_vocabulary, titles_of
from batchrank.errors import DataError, ModelError, first_line
from batchrank.imported import IMPORTED, rows_of
from batchrank.vocab import Vocabulary, id_kind_of

__all__ = [
    "CURVE_FILE",
    "ITEMS_FILE",
    "META_FILE",
    "MODEL_FILE",
    "SCORED_METADATA",
    "USERS_FILE",
    "WEIGHTS_FILE",
    "fingerprint",
    "fingerprint_v1",
    "read_weights",
    "vocabularies",
]

SCORED_METADATA = ("kind", "format_version", "label_transform", "rating_scale", "columns")
"""Metadata entries inside the fingerprint: those that change scores or how inputs are read
(not the training curve, metrics or timestamps)."""
MODEL_FILE, USERS_FILE, ITEMS_FILE, META_FILE, CURVE_FILE, WEIGHTS_FILE = (
    "model.keras",
    "users.parquet",
    "items.parquet",
    "metadata.json",
    "training_curve.png",
    "weights.npz",
)


def fingerprint(folder: Path, meta: dict[str, Any]) -> str:
    """sha256 over everything that determines scores: the model, its arrays, the vocabularies
    (titles included) and the metadata entries in :data:`SCORED_METADATA`."""
    h = hashlib.sha256(b"batchrank-bundle-fingerprint-v2\n")
    for name in (MODEL_FILE, USERS_FILE, ITEMS_FILE, WEIGHTS_FILE):
        if name == WEIGHTS_FILE and not (folder / name).exists():
            continue
        with (folder / name).open("rb") as f:  # in blocks: a model can be GBs
            h.update(f"{name}\n{os.fstat(f.fileno()).st_size}\n".encode())
            while block := f.read(1 << 24):
                h.update(block)
    scored = {key: meta.get(key) for key in SCORED_METADATA}
    if IMPORTED in meta:  # only then, so that other bundles keep their fingerprints
        scored[IMPORTED] = meta[IMPORTED]
    if "features" in meta:
        # the side features' encoding (categories, normalisation); their values are in the
        # weights already. Only when present, so older bundles keep their fingerprints.
        scored["features"] = meta["features"]
    h.update(json.dumps(scored, sort_keys=True, separators=(",", ":")).encode())
    return "sha256:" + h.hexdigest()


def fingerprint_v1(folder: Path) -> str:
    """Format 1's fingerprint: the files only."""
    h = hashlib.sha256()
    for name in (MODEL_FILE, USERS_FILE, ITEMS_FILE, WEIGHTS_FILE):
        if name == WEIGHTS_FILE and not (folder / name).exists():
            continue
        h.update(name.encode())
        h.update((folder / name).read_bytes())
    return "sha256:" + h.hexdigest()


def _aligned(a: np.ndarray) -> np.ndarray:
    """``a`` in a 64-byte aligned buffer: JAX on CPU then uses the array in place instead of
    copying it (a million-user embedding is 128 MiB)."""
    if a.ctypes.data % 64 == 0 or a.nbytes < 1 << 20:
        return a
    buf = np.empty(a.nbytes + 64, dtype=np.uint8)
    start = -buf.ctypes.data % 64
    out = buf[start : start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


def _read_stored_member(fh: Any, info: zipfile.ZipInfo) -> np.ndarray | None:
    """An uncompressed ``.npy`` member read straight into a 64-byte aligned buffer, its CRC
    checked; None for a member this cannot read (compressed, object dtype): np.load reads it.

    ``np.load`` copies a member in 256 KiB pieces into a fresh array, which :func:`_aligned`
    then copies again: at 10 M users that was 8.5 s of a 12 s bundle load, mostly the kernel
    zeroing two fresh 1.3 GB buffers. One buffer and ``readinto`` take about a quarter of it.
    """
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
        return None
    fh.seek(info.header_offset)
    local = fh.read(30)
    if len(local) != 30 or local[:4] != b"PK\x03\x04":
        raise ValueError(f"member {info.filename}: bad local header")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    fh.seek(info.header_offset + 30 + name_len + extra_len)
    start = fh.tell()
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        return None
    if dtype.hasobject:
        return None
    header = fh.tell() - start
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if header + nbytes != info.file_size:
        raise ValueError(
            f"member {info.filename}: {info.file_size} bytes, expected {header + nbytes}"
        )
    buf = np.empty(nbytes + 64, dtype=np.uint8)
    body = buf[-buf.ctypes.data % 64 :][:nbytes]
    view = memoryview(body.data)
    if fh.readinto(view) != nbytes:
        raise ValueError(f"member {info.filename}: truncated")
    fh.seek(start)
    crc = zlib.crc32(fh.read(header))
    if zlib.crc32(view, crc) != info.CRC:
        raise ValueError(f"member {info.filename}: CRC mismatch (corrupt file)")
    return body.view(dtype).reshape(shape, order="F" if fortran else "C")


def read_weights(file: Path) -> dict[str, np.ndarray]:
    try:
        out: dict[str, np.ndarray] = {}
        with file.open("rb") as fh, zipfile.ZipFile(fh) as zf:
            for info in zf.infolist():
                name = info.filename.removesuffix(".npy")
                arr = _read_stored_member(fh, info)
                if arr is None:  # what np.load does per member, on the archive already open
                    with zf.open(info) as member:
                        arr = _aligned(np.lib.format.read_array(member, allow_pickle=False))
                out[name] = arr
        return out
    except Exception as e:  # zipfile, zlib, numpy format errors: all mean a corrupt file
        raise ModelError(f"{file}: cannot read the weights ({first_line(e)})") from e


def _read_ids(file: Path, column: str) -> pa.Table:
    try:
        table = pq.read_table(file)
    except Exception as e:
        raise ModelError(f"{file}: cannot read the vocabulary ({first_line(e)})") from e
    if column not in table.column_names:
        found = ", ".join(f"`{c}`" for c in table.column_names) or "no columns"
        raise ModelError(f"{file}: column `{column}` missing; found {found}")
    return table


def vocabularies(
    path: Path, meta: dict[str, Any]
) -> tuple[Vocabulary, Vocabulary, pa.Array | None, tuple[np.ndarray, np.ndarray] | None]:
    data = meta.get("data")
    if not isinstance(data, dict):
        data = {}
    vocabs = []
    for file, column, kind_key in (
        (path / USERS_FILE, "user_id", "user_id_kind"),
        (path / ITEMS_FILE, "movie_id", "movie_id_kind"),
    ):
        table = _read_ids(file, column)
        ids = table.column(column).combine_chunks()
        try:
            vocab = Vocabulary(ids=ids, kind=id_kind_of(ids, where=f"{file}: column `{column}`"))
        except DataError as e:
            raise ModelError(str(e)) from e
        check_vocabulary(vocab, file, data.get(kind_key))
        vocabs.append((vocab, table))
    (users, users_tbl), (items, items_tbl) = vocabs
    titles = titles_of(items_tbl, path / ITEMS_FILE, len(items))
    return users, items, titles, rows_of(path, users_tbl, items_tbl)
