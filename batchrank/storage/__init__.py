"""Where batchrank publishes: one primitive for every file it writes.

Every sink writes under a temporary name and then commits or discards (:class:`Staged`);
several files that must appear together are committed as one :class:`CommitUnit`, which rolls
back what it had already renamed when a later step fails. :mod:`batchrank.storage.local` is the
local-disk implementation, :mod:`batchrank.storage.remote` the object-store one (no rename:
upload to a staging key, then server-side copy); :data:`ANY` picks one per target.
"""

from __future__ import annotations

from batchrank.storage.base import Committed, Staged, Storage
from batchrank.storage.dispatch import ANY, AnyStorage, atomic_dir, atomic_file, storage_for
from batchrank.storage.local import (
    LOCAL,
    TMP_MARK,
    LocalStorage,
    check_target,
    clean_leftovers,
    ensure_folder,
    fsync_dir,
    sha256_file,
)
from batchrank.storage.unit import CommitUnit

__all__ = [
    "ANY",
    "LOCAL",
    "TMP_MARK",
    "AnyStorage",
    "CommitUnit",
    "Committed",
    "LocalStorage",
    "Staged",
    "Storage",
    "atomic_dir",
    "atomic_file",
    "check_target",
    "clean_leftovers",
    "ensure_folder",
    "fsync_dir",
    "sha256_file",
    "storage_for",
]
