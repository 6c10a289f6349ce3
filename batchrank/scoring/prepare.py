"""Preparing a run: load the model, discover and validate every input, before any work."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa

from batchrank.bundle import Bundle, load_bundle
from batchrank.errors import DataError
from batchrank.fs import is_remote, local_folder_for
from batchrank.scoring import cross, discover, reader
from batchrank.scoring.context import Fragment, RunContext, spill_prefix
from batchrank.scoring.exclude import sorted_unique
from batchrank.scoring.predict import MAX_TABLE_CELLS
from batchrank.scoring.rules import Rules, load_rules
from batchrank.scoring.spec import ScoreSpec
from batchrank.store_errors import remote_reason

__all__ = [
    "CROSS_JOIN_FRAGMENT_PAIRS",
    "clean_spill_leftovers",
    "file_identity",
    "fragment_key",
    "prepare",
]

log = logging.getLogger("batchrank.score")

# With --pairs all, users are scored in blocks of this many pairs; each block is a fragment.
CROSS_JOIN_FRAGMENT_PAIRS = 4_000_000
CONTENT_CHECK_BYTES = 1 << 20
"""Bytes hashed at each end of an input file for its resume key."""


def _boundaries(bundle: Bundle, parts: int = 64) -> pa.Array:
    """User-range partition boundaries for spilling: quantiles of the user vocabulary."""
    ids = bundle.users.ids
    n = len(ids)
    if n <= parts:
        return ids
    pos = np.unique((np.arange(1, parts) * n) // parts)
    return ids.take(pa.array(pos))


def _use_score_table(spec: ScoreSpec, bundle: Bundle, total: int, unit: str) -> bool:
    """Score every cell once when the input has at least twice as many pairs as cells."""
    if spec.score_table == "never" or spec.is_cross_join:
        return False
    cells = bundle.users.size * bundle.items.size
    return unit == "rows" and cells <= MAX_TABLE_CELLS and total >= 2 * cells


def fragment_key(*parts: object) -> str:
    """A short stable key for a fragment from the things that define its partial result."""
    h = hashlib.sha256()
    for p in parts:
        h.update(repr(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


def _ids_digest(ids: pa.Array) -> str:
    """sha256 of a list of ids' values, in order (int64 bytes, or NUL-separated text)."""
    h = hashlib.sha256()
    if pa.types.is_integer(ids.type):
        h.update(np.asarray(ids.cast(pa.int64()).to_numpy(zero_copy_only=False)).tobytes())
    else:
        for value in ids.to_pylist():
            h.update(str(value).encode())
            h.update(b"\0")
    return h.hexdigest()


def file_identity(f: reader.InputFile) -> tuple[object, ...]:
    """What identifies a file's content without reading it all.

    Resolved path, size, mtime in nanoseconds and inode, plus a sha256 of its first and last
    MiB and, for Parquet, of its whole footer (schema, row groups, statistics): a file
    rewritten in place with the same size and its mtime put back still gets another identity
    unless its head, tail and footer are unchanged.
    """
    path = f.path.resolve()
    try:
        st = path.stat()
        h = hashlib.sha256()
        with path.open("rb") as fh:
            h.update(fh.read(CONTENT_CHECK_BYTES))
            fh.seek(max(st.st_size - CONTENT_CHECK_BYTES, 0))
            h.update(fh.read(CONTENT_CHECK_BYTES))
            if f.format == "parquet" and st.st_size >= 12:
                fh.seek(st.st_size - 8)
                footer = int.from_bytes(fh.read(4), "little")
                fh.seek(max(st.st_size - 8 - footer, 0))
                h.update(fh.read(footer + 8))
            etag = _etag(fh)
    except OSError as e:
        why = remote_reason(e) if is_remote(path) else e.strerror
        raise DataError(f"{f.path}: cannot read file ({why})", file=str(f.path)) from e
    return (str(path), st.st_size, st.st_mtime_ns, st.st_ino, h.hexdigest(), *etag)


def _etag(fh: object) -> tuple[str, ...]:
    """An object's ETag (S3, GCS: changes with every write), from its opened file's metadata;
    nothing for a local file, whose inode and mtime serve."""
    meta = getattr(fh, "metadata", None)
    if meta is None:
        return ()
    value = meta().get(b"ETag") or meta().get("ETag")
    return (value.decode() if isinstance(value, bytes) else str(value),) if value else ()


def _fragments(
    spec: ScoreSpec,
    bundle: Bundle,
    files: list[reader.InputFile],
    cross_users: pa.Array | None,
    rules: Rules | None = None,
) -> tuple[Fragment, ...]:
    """The run's resumable units of work, in order, each keyed by what defines its result.

    Every key holds the options that change partials (bundle fingerprint, top_k, unknown
    policy, id columns, the rules' files and star floor); a file's key adds its content
    identity (:func:`file_identity`), a block of ``--pairs all`` users the digest of its users
    and of the whole user list.
    """
    common: tuple[object, ...] = (
        bundle.fingerprint,
        spec.top_k,
        spec.unknown,
        spec.user_column,
        spec.item_column,
    )
    if rules is not None:  # a changed exclude file or star floor must not reuse a partial
        rule_files = tuple(file_identity(f) for f in rules.files)
        common += ("rules", rules.min_stars, spec.exclude, rule_files)
    if spec.precision != "float32":  # float32 keys stay as they were: old work folders resume
        common += (spec.precision,)
    if cross_users is not None:
        per_block = max(1, CROSS_JOIN_FRAGMENT_PAIRS // max(len(bundle.items), 1))
        everyone = _ids_digest(cross_users)
        out = []
        for n, start in enumerate(range(0, len(cross_users), per_block)):
            block = cross_users.slice(start, per_block)
            key = fragment_key("all", *common, everyone, start, len(block), _ids_digest(block))
            out.append(Fragment(key=key, index=n, user_start=start, user_count=len(block)))
        return tuple(out)
    return tuple(
        Fragment(key=fragment_key("file", *common, *file_identity(f)), index=idx, file_index=idx)
        for idx, f in enumerate(files)
    )


def clean_spill_leftovers(out: Path) -> None:
    """Remove scratch folders of earlier killed runs (spill files are anonymous; folders stay)."""
    # A plain prefix, never a glob (top[1].csv is a valid name); the run holds the output's
    # lock, so no live run owns these.
    prefix = spill_prefix(out)
    with contextlib.suppress(OSError):
        for entry in os.scandir(local_folder_for(out.parent, "scratch")):
            if entry.name.startswith(prefix):
                shutil.rmtree(entry.path, ignore_errors=True)


def _load_titles(spec: ScoreSpec, bundle: Bundle) -> pa.Table | None:
    if spec.items is None:
        if bundle.titles is None:
            return None
        return pa.table({"movie_id": bundle.items.ids, "title": bundle.titles})
    from batchrank.sources import Columns, load_items

    return load_items(spec.items, Columns(item=spec.item_column, title=spec.title_column))


def prepare(spec: ScoreSpec) -> RunContext:
    """Load and check everything a run needs; raise before any scoring work on bad input."""
    t0 = time.perf_counter()
    bundle = load_bundle(spec.model, model=False)
    spec = spec.with_columns(bundle.columns)  # unset columns: the training data's names
    t1 = time.perf_counter()
    files: list[reader.InputFile] = []
    cross_users = None
    if spec.is_cross_join:
        if spec.users is not None:
            raw = cross.read_user_subset(spec.users, spec.user_column)
            cross_users = _known_users(raw, bundle, spec)
        else:
            cross_users = bundle.users.ids
        total: int = len(cross_users) * len(bundle.items)
        unit: reader.WorkUnit = "rows"
    else:
        files = discover.discover_inputs(spec.pairs)
        reader.validate_inputs(files, user_col=spec.user_column, item_col=spec.item_column)
        total, unit = reader.total_work(files)
    titles = _load_titles(spec, bundle)
    rules = load_rules(spec, bundle)
    return RunContext(
        spec=spec,
        bundle=bundle,
        files=tuple(files),
        cross_users=cross_users,
        titles=titles,
        run_id=spec.run_id or uuid.uuid4().hex[:12],
        fragments=_fragments(spec, bundle, files, cross_users, rules),
        boundaries=_boundaries(bundle),
        score_table=_use_score_table(spec, bundle, total, unit),
        total_work=total,
        work_unit=unit,
        timings={"load_model_s": t1 - t0, "prepare_s": time.perf_counter() - t0},
        rules=rules,
    )


def _known_users(raw: pa.Array, bundle: Bundle, spec: ScoreSpec) -> pa.Array:
    """The --users subset, as known ids of the vocabulary's kind, sorted and unique."""
    import pyarrow.compute as pc

    from batchrank.vocab import coerce_ids

    where = f"{spec.users}: column `{spec.user_column}`"
    ids, bad = coerce_ids(raw, bundle.users.kind, where=where)
    if bad.any() or ids.null_count:
        row = int(np.argmax(bad | ~np.asarray(pc.is_valid(ids).to_numpy(zero_copy_only=False))))
        raise DataError(
            f"{where}: row {row + 1} is not a valid user id ({raw[row].as_py()!r})",
            file=str(spec.users),
            row=row + 1,
        )
    idx = bundle.users.lookup(ids)
    unknown = idx == 0
    if unknown.any():
        first = ids[int(np.argmax(unknown))].as_py()
        if spec.unknown == "fail":
            raise DataError(
                f"{where}: unknown user id {first!r} (not in the model; --unknown fail)",
                file=str(spec.users),
            )
        log.warning(
            "%s: %d users are not in the model and are skipped (first: %r)",
            spec.users,
            int(unknown.sum()),
            first,
            extra={"event": "unknown_users", "counts": {"unknown_user": int(unknown.sum())}},
        )
    known = sorted_unique(idx[~unknown])  # np.unique: 0.95 s for 1 M users, this 0.07
    return bundle.users.id_at(known)
