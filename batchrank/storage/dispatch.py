"""The storage of a target: local disk for a path, the object store for an ObjectPath."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from batchrank.fs import is_remote, local_or_remote
from batchrank.storage.base import Committed, Staged, Storage
from batchrank.storage.local import LOCAL
from batchrank.storage.remote import OBJECTS

__all__ = ["ANY", "AnyStorage", "atomic_dir", "atomic_file", "storage_for"]


def storage_for(target: Path) -> Storage:
    """:data:`~batchrank.storage.remote.OBJECTS` for an object-store path, else the local disk."""
    return OBJECTS if is_remote(local_or_remote(Path(target))) else LOCAL


class AnyStorage(Storage):
    """Each target published by its own storage (:func:`storage_for`)."""

    def stage(self, target: Path, what: str = "output") -> Staged:
        target = local_or_remote(Path(target))
        return storage_for(target).stage(target, what)

    def stage_dir(self, target: Path, what: str = "output") -> Staged:
        """A folder published as a whole (a bundle)."""
        target = local_or_remote(Path(target))
        return storage_for(target).stage_dir(target, what)

    def stage_parts(self, target: Path, what: str = "output") -> Staged:
        """A folder of part files (see :meth:`Storage.stage_parts`)."""
        target = local_or_remote(Path(target))
        return storage_for(target).stage_parts(target, what)

    def withdraw(self, target: Path) -> Committed | None:
        target = local_or_remote(Path(target))
        return storage_for(target).withdraw(target)


ANY = AnyStorage()
"""Publishing wherever the target lives."""


@contextlib.contextmanager
def atomic_file(target: Path, what: str = "output") -> Iterator[Path]:
    """Yield a local temporary path; on success publish it at ``target`` (local or remote)."""
    with ANY.stage(target, what) as tmp:
        yield tmp


@contextlib.contextmanager
def atomic_dir(target: Path, what: str = "output") -> Iterator[Path]:
    """Yield a local temporary folder; on success it replaces ``target`` (local or remote)."""
    with ANY.stage_dir(target, what) as tmp:
        yield tmp
