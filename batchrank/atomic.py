"""Kept for imports written before :mod:`batchrank.storage`; use that package instead."""

from batchrank.storage.local import TMP_MARK, atomic_dir, atomic_file, clean_leftovers, fsync_dir

__all__ = ["TMP_MARK", "atomic_dir", "atomic_file", "clean_leftovers", "fsync_dir"]
