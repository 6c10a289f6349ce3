"""Publishing to an object store (S3, GCS, ADLS, HDFS), where there is no atomic rename.

A writer writes to a local temporary file (:attr:`Staged.path`, as on local disk). Then:

1. **seal** (:meth:`_RemoteStaged.seal`, every file of a unit before any final key changes):
   the file is uploaded to a staging key ``<folder>/_batchrank-tmp/<name>/<token>`` and its
   size checked. A failed or killed upload leaves at most an incomplete multipart upload or a
   staging object; both are under ``_batchrank-tmp/`` (a ``_`` name, skipped by discovery),
   never at a final key. Even an upload Arrow completes on an error lands there, not at the
   final key.
2. **commit**: the object now at the final key (if any) is copied to
   ``_batchrank-tmp/<name>/old-<token>`` (the rollback copy), then the staging object is copied
   server-side to the final key. A copy is one request that either replaces the whole object
   or leaves the old one: a reader sees the old bytes or the new, never a mix.
3. **finalize** deletes the rollback copy and the staging object; **rollback** copies the old
   object back (or deletes the new one when there was none).

:class:`~batchrank.storage.unit.CommitUnit` seals every file first, then withdraws the
certificates (manifest, ``_SUCCESS``: copied aside, then deleted), commits data, then the new
certificates, so the window in which the previous export is uncertified is the few server-side
copies of the commit, never the upload. Each leftover of a dead run (staging objects, rollback
copies, incomplete multipart uploads) lies under ``_batchrank-tmp/<name>/`` and is removed by
the next run that stages the same name (it holds that output's lock:
:func:`batchrank.storage.lock.output_lock`).

**A folder of parts** (:meth:`ObjectStorage.stage_parts`) must stay readable through the
previous manifest until the new manifest replaces it; a bundle's folder
(:meth:`ObjectStorage.stage_dir`) is replaced key by key instead (a kill half-way leaves a mix
its fingerprint check refuses). So each version's parts are named apart by the part writer
(``part-00000-<digest>.parquet``, the digest of the parts' listing: a key that exists already
holds the same bytes), the commit copies them in *beside* the previous version's (the marker
first, claiming the folder; an existing key copied aside first, for rollback), and the previous
manifest is not withdrawn (:attr:`Staged.keeps_previous`). Once the new manifest is committed,
:meth:`_PartsCommitted.settle` copies aside and deletes every other object under the folder
(the previous parts, a dead run's strays), and only then does ``_SUCCESS`` come back: it never
stands beside two versions' parts. A kill before settle leaves the previous manifest and every
part it lists; a kill during settle, the new manifest and every part it lists.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from pathlib import Path

from batchrank.errors import OutputError
from batchrank.fs import ObjectPath, filesystem_of
from batchrank.storage.base import Committed, Staged, Storage
from batchrank.storage.multipart import abort_uploads
from batchrank.store_errors import remote_reason

__all__ = ["STAGING_DIR", "ObjectStorage", "clean_remote_leftovers", "staging_folder"]

STAGING_DIR = "_batchrank-tmp"
"""The folder, beside each target, of staged uploads and rollback copies."""
UPLOAD_CHUNK = 8 << 20
MAX_COPY_BYTES = 5 * 1024**3
"""S3's CopyObject limit: a larger object cannot be committed by a single server-side copy."""


def staging_folder(target: ObjectPath) -> ObjectPath:
    """``<folder>/_batchrank-tmp/<name>``: every temporary object of ``target``."""
    return target.parent / STAGING_DIR / target.name


def _fail(target: ObjectPath, doing: str, e: BaseException) -> OutputError:
    return OutputError(f"{target.display()}: cannot {doing} ({remote_reason(e)})")


def _objects(prefix: ObjectPath) -> list[tuple[ObjectPath, int]]:
    """Objects under ``prefix`` (recursively) with their sizes."""
    return [(p, int(i.size or 0)) for p, i in prefix.iter_files()]


def _delete(path: ObjectPath) -> None:
    fs, p = filesystem_of(path)
    fs.delete_file(p)


def _delete_tree(prefix: ObjectPath) -> None:
    """Delete every object under ``prefix`` and its folder marker."""
    fs, p = filesystem_of(prefix)
    with contextlib.suppress(OSError):
        fs.delete_dir(p)


def _prune(target: ObjectPath) -> None:
    """Drop the empty folder markers Arrow leaves under ``_batchrank-tmp/`` (it re-creates a
    parent's marker after a delete); a folder still holding objects is left alone."""
    for folder in (staging_folder(target), staging_folder(target).parent):
        with contextlib.suppress(OSError):
            if _objects(folder):
                return
            _delete_tree(folder)


def _copy(src: ObjectPath, dst: ObjectPath) -> None:
    fs, s = filesystem_of(src)
    _, d = filesystem_of(dst)
    fs.copy_file(s, d)


def clean_remote_leftovers(target: ObjectPath) -> list[ObjectPath]:
    """Remove dead runs' temporaries of ``target`` (staging objects, rollback copies,
    incomplete multipart uploads); the caller holds the target's lock. Best effort.

    Returns:
        The objects removed.
    """
    removed: list[ObjectPath] = []
    folder = staging_folder(target)
    with contextlib.suppress(OSError):
        for p, _ in _objects(folder):
            with contextlib.suppress(OSError):
                _delete(p)
                removed.append(p)
    abort_uploads(folder)
    if removed:
        _prune(target)
    return removed


def _upload(local: Path, dest: ObjectPath) -> None:
    """Upload a local file (or every file of a folder) under ``dest``, checking sizes.

    A plain output stream (multipart for large files) creates no folder markers. Arrow
    completes a stream it closes on an error; that partial object lies at the staging key,
    which the size check and :meth:`_RemoteStaged.discard` take care of.
    """
    fs, d = filesystem_of(dest)
    files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
    for f in files:
        rel = "" if f == local else f.relative_to(local).as_posix()
        key = f"{d}/{rel}" if rel else d
        with open(f, "rb") as src, fs.open_output_stream(key) as out:
            while chunk := src.read(UPLOAD_CHUNK):
                out.write(chunk)
        size = fs.get_file_info(key).size
        if size != f.stat().st_size:
            raise OSError(f"uploaded {size} of {f.stat().st_size} bytes")


class _RemoteCommitted(Committed):
    def __init__(
        self,
        target: ObjectPath,
        backups: dict[ObjectPath, ObjectPath],
        added: list[ObjectPath],
    ) -> None:
        self.target = target
        self.backups = backups  # final key -> rollback copy
        self.added = added  # final keys this commit created (nothing was there)

    def rollback(self) -> None:
        try:
            for final, copy in self.backups.items():
                _copy(copy, final)
            for final in self.added:
                _delete(final)
        except OSError as e:
            raise _fail(self.target, "roll back", e) from e
        self.finalize()

    def finalize(self) -> None:
        for copy in self.backups.values():
            with contextlib.suppress(OSError):
                _delete(copy)
        if self.backups:
            _prune(self.target)
        self.backups, self.added = {}, []


class _RemoteStaged(Staged):
    def __init__(self, target: ObjectPath, what: str, folder: bool = False) -> None:
        self.target = target
        self.obj = target
        self.what = what
        self.folder = folder
        self.token = uuid.uuid4().hex[:12]
        clean_remote_leftovers(target)
        self._dir = Path(tempfile.mkdtemp(prefix="batchrank-upload-"))
        self._local = self._dir / target.name
        if folder:
            self._local.mkdir()
        else:
            self._local.touch()
        self._staging = staging_folder(target) / self.token
        self._sealed = False
        self._done = False

    @property
    def path(self) -> Path:
        return self._local

    def seal(self) -> None:
        """Upload the local file to its staging key (before any final key of the unit)."""
        if self._sealed:
            return
        size = sum(p.stat().st_size for p in self._local_files())
        if self.obj.scheme == "s3" and not self.folder and size > MAX_COPY_BYTES:
            raise OutputError(
                f"{self.obj.display()}: {self.what} is {size} bytes, over the 5 GiB an S3 "
                "server-side copy commits; split it (--max-rows-per-file)"
            )
        try:
            _upload(self._local, self._staging)
        except OSError as e:
            self.discard()
            raise _fail(self.obj, f"upload the {self.what}", e) from e
        self._sealed = True

    def _local_files(self) -> list[Path]:
        if not self.folder:
            return [self._local]
        return sorted(p for p in self._local.rglob("*") if p.is_file())

    def commit(self) -> Committed:
        if self._done:
            raise OutputError(f"{self.obj}: {self.what} was already committed or discarded")
        self.seal()
        backups: dict[ObjectPath, ObjectPath] = {}  # final key -> rollback copy
        added: list[ObjectPath] = []  # final keys the commit created
        try:
            self._copy_in(backups, added)
        except OSError as e:
            with contextlib.suppress(OutputError):
                _RemoteCommitted(self.obj, backups, added).rollback()
            self.discard()
            raise _fail(self.obj, f"commit the {self.what}", e) from e
        committed = self._committed(backups, added)  # before the local files go
        self._done = True
        self._remove_staging()
        shutil.rmtree(self._dir, ignore_errors=True)
        return committed

    def _copy_in(self, backups: dict[ObjectPath, ObjectPath], added: list[ObjectPath]) -> None:
        """Copy the staging objects to their final keys, the previous objects aside first;
        a folder's objects the new version lacks are deleted (restored on rollback)."""
        old = (
            [p for p, _ in _objects(self.obj)]
            if self.folder
            else ([self.obj] if self.obj.is_file() else [])
        )
        for n, final in enumerate(old):
            copy = staging_folder(self.obj) / f"old-{self.token}" / str(n)
            _copy(final, copy)
            backups[final] = copy
        new = [
            (self._staging / p.relative_to(self._local).as_posix(),
             self.obj / p.relative_to(self._local).as_posix())
            if self.folder else (self._staging, self.obj)
            for p in self._local_files()
        ]  # fmt: skip
        for src, final in new:
            _copy(src, final)
            if final not in backups:
                added.append(final)
        keep = {final for _, final in new}
        for final in old:
            if final not in keep:
                _delete(final)

    def _committed(
        self, backups: dict[ObjectPath, ObjectPath], added: list[ObjectPath]
    ) -> Committed:
        return _RemoteCommitted(self.obj, backups, added)

    def _remove_staging(self) -> None:
        if self.folder:
            _delete_tree(self._staging)
        else:
            with contextlib.suppress(OSError):
                _delete(self._staging)
        _prune(self.obj)

    def discard(self) -> None:
        if self._done:
            return
        self._done = True
        shutil.rmtree(self._dir, ignore_errors=True)
        if self._sealed:
            self._remove_staging()


class _PartsCommitted(_RemoteCommitted):
    """Parts committed beside the previous version's; :meth:`settle` drops the previous."""

    def __init__(
        self,
        target: ObjectPath,
        backups: dict[ObjectPath, ObjectPath],
        added: list[ObjectPath],
        keep: set[ObjectPath],
        token: str,
    ) -> None:
        super().__init__(target, backups, added)
        self.keep = keep
        self.token = token

    def settle(self) -> None:
        """Copy aside and delete every object under the folder the new version lacks."""
        aside = staging_folder(self.target) / f"gone-{self.token}"
        try:
            for n, (final, _) in enumerate(_objects(self.target)):
                if final in self.keep:
                    continue
                copy = aside / str(n)
                _copy(final, copy)
                self.backups[final] = copy
                _delete(final)
        except OSError as e:
            raise _fail(self.target, "remove the previous parts", e) from e


class _PartsStaged(_RemoteStaged):
    """A local folder of parts, committed beside the previous version's (module docstring)."""

    keeps_previous = True

    def __init__(self, target: ObjectPath, what: str) -> None:
        super().__init__(target, what, folder=True)

    def _copy_in(self, backups: dict[ObjectPath, ObjectPath], added: list[ObjectPath]) -> None:
        """Copy the parts in beside the previous version's, in order; the previous version's
        objects stay (:meth:`_PartsCommitted.settle` drops them). The marker comes first: it
        claims the folder, so a dead first run's strays never make the next run refuse it."""
        existing = {p for p, _ in _objects(self.obj)}
        for n, rel in enumerate(self._rels()):
            final = self.obj / rel
            if final in existing:  # the same bytes (same digest), or the marker
                copy = staging_folder(self.obj) / f"old-{self.token}" / str(n)
                _copy(final, copy)
                backups[final] = copy
            _copy(self._staging / rel, final)
            if final not in existing:
                added.append(final)

    def _rels(self) -> list[str]:
        rels = (p.relative_to(self._local).as_posix() for p in self._local_files())
        return sorted(rels, key=lambda rel: (not rel.startswith("."), rel))

    def _committed(
        self, backups: dict[ObjectPath, ObjectPath], added: list[ObjectPath]
    ) -> Committed:
        keep = {self.obj / rel for rel in self._rels()}
        return _PartsCommitted(self.obj, backups, added, keep, self.token)


class ObjectStorage(Storage):
    """Publishing to an object store (see the module docstring for the protocol)."""

    def stage(self, target: Path, what: str = "output") -> Staged:
        """A local temporary file; committing uploads it and copies it to ``target``."""
        assert isinstance(target, ObjectPath)
        return _RemoteStaged(target, what)

    def stage_dir(self, target: Path, what: str = "output") -> Staged:
        """A local temporary folder published as the objects under ``target/``; objects under
        ``target/`` that the new version lacks are deleted (and restored on rollback)."""
        assert isinstance(target, ObjectPath)
        return _RemoteStaged(target, what, folder=True)

    def stage_parts(self, target: Path, what: str = "output") -> Staged:
        """A local temporary folder of parts, committed beside the previous version's parts,
        which :meth:`Committed.settle` removes (:class:`_PartsStaged`)."""
        assert isinstance(target, ObjectPath)
        return _PartsStaged(target, what)

    def withdraw(self, target: Path) -> Committed | None:
        """Copy ``target`` aside and delete it; rollback copies it back."""
        assert isinstance(target, ObjectPath)
        try:
            if not target.is_file():
                return None
            copy = staging_folder(target) / f"old-{uuid.uuid4().hex[:12]}" / "0"
            _copy(target, copy)
            _delete(target)
        except OSError as e:
            raise _fail(target, "move aside", e) from e
        return _RemoteCommitted(target, {target: copy}, [])


OBJECTS = ObjectStorage()
"""The object-store storage."""
