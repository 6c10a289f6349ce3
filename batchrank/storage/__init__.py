"""Where batchrank publishes: one primitive for every file it writes.

Every sink writes under a temporary name and then commits or discards (:class:`Staged`);
several files that must appear together are committed as one :class:`CommitUnit`, which rolls
back what it had already renamed when a later step fails. :mod:`batchrank.storage.local` is the
local-disk implementation; an object-store implementation plugs in behind the same interface
(:class:`batchrank.storage.base.Storage`).
"""

from __future__ import annotations

from batchrank.storage.base import Committed, Staged, Storage
from batchrank.storage.local import (
    LOCAL,
    TMP_MARK,
    LocalStorage,
    atomic_dir,
    atomic_file,
    check_target,
    clean_leftovers,
    ensure_folder,
    fsync_dir,
    sha256_file,
)
from batchrank.storage.unit import CommitUnit

__all__ = [
    "LOCAL",
    "TMP_MARK",
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
]
