"""A model bundle in an object store, fetched once into a local cache and loaded from there.

A bundle is small next to the inputs (embeddings and vocabularies), and loading it reads every
file anyway, so ``--model s3://b/models/m`` downloads the bundle's objects into
``<cache>/bundles/<key>/`` (``BATCHRANK_CACHE_DIR``, default ``~/.cache/batchrank``), where
``<key>`` hashes the URI and every object's key, size and modification time: a bundle
re-published under the same URI gets a new key, never a stale copy. The load then verifies the
bundle's fingerprint as for a local one. Each Ray worker fetches it the same way, so no shared
file system is needed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import uuid
from pathlib import Path

from batchrank.errors import ModelError
from batchrank.fs import ObjectPath, bucket_exists, cache_root, filesystem_of
from batchrank.store_errors import remote_reason

__all__ = ["fetch_bundle"]


def fetch_bundle(path: ObjectPath) -> Path:
    """The local copy of the bundle at ``path`` (downloaded unless cached).

    Raises:
        ModelError: no bundle there, the bucket is missing, access is denied or the store
            cannot be reached (the message names the URI).
    """
    import pyarrow.fs as pafs

    try:
        objects = [
            (p, i) for p, i in path.iter_files() if not p.parts[len(path.parts)].startswith("_")
        ]
        if not objects:
            missing = "" if bucket_exists(path) else " (bucket does not exist)"
            raise ModelError(f"{path.display()}: model bundle not found{missing}")
        h = hashlib.sha256(str(path).encode())
        for p, info in objects:
            h.update(f"\0{p.key}\0{info.size}\0{info.mtime_ns}".encode())
        local = cache_root() / "bundles" / h.hexdigest()[:24]
        if local.is_dir():
            return local
        tmp = local.with_name(f".{local.name}.{uuid.uuid4().hex[:8]}")
        fs, _ = filesystem_of(path)
        try:
            for p, _info in objects:
                dest = tmp / p.relative_to(path).as_posix()
                dest.parent.mkdir(parents=True, exist_ok=True)
                pafs.copy_files(p.fs_path, str(dest), source_filesystem=fs)
            with contextlib.suppress(FileExistsError, OSError):
                os.rename(tmp, local)  # another process may have fetched it first
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if not local.is_dir():
            raise ModelError(f"{path.display()}: cannot cache the bundle in {local}")
        return local
    except OSError as e:
        raise ModelError(
            f"{path.display()}: cannot read the model bundle ({remote_reason(e)})"
        ) from e


def localize(path: Path) -> tuple[Path, str | None]:
    """``path`` itself, or the local copy of a remote bundle and the URI to name in messages."""
    if isinstance(path, ObjectPath):
        return fetch_bundle(path), path.display()
    return path, None
