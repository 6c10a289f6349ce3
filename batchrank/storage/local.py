"""The local-disk implementation of the publish primitive.

A staged file is written as ``.{name}.batchrank-tmp-<hex>`` beside its target and published by
``os.replace`` (atomic on POSIX), after an ``fsync`` of the file and then of the folder. The
previous file at the target is kept as a hard link ``.{name}.batchrank-old-<hex>`` until the
commit is finalized, so a :class:`~batchrank.storage.unit.CommitUnit` can put it back.

Each temporary holds an ``flock`` for as long as its writer lives. The kernel drops the lock when
the process ends, however it ends, so :func:`clean_leftovers` can tell a dead run's leftovers
(removed) from a live run's temporaries (left alone) without guessing from names or pids.

Targets must be regular files (or absent): a symlink, folder, device, FIFO or socket at a
target is refused, since a rename would replace the link or node itself (``--rejects /dev/null``
as root would replace the system's ``/dev/null`` with a regular file). A folder target
(:meth:`LocalStorage.stage_dir`) must be a real folder or absent; it is replaced whole, in one
atomic swap where the kernel allows it (:mod:`batchrank.storage.swap`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

from batchrank.errors import BatchrankError, OutputError
from batchrank.fs import is_remote, local_or_remote
from batchrank.storage.base import Committed, Staged, Storage
from batchrank.storage.swap import replace_dir, restore_dir

__all__ = [
    "LOCAL",
    "OLD_MARK",
    "TMP_MARK",
    "LocalStorage",
    "atomic_dir",
    "atomic_file",
    "check_target",
    "clean_leftovers",
    "ensure_folder",
    "fsync_dir",
    "os_reason",
    "sha256_file",
    "tmp_name",
]

TMP_MARK = ".batchrank-tmp-"
"""Marks a temporary file or folder of a write in progress."""
OLD_MARK = ".batchrank-old-"
"""Marks the previous version of a target kept until its commit is finalized."""


def os_reason(e: OSError) -> str:
    """An OS error's reason for a one-line message (``no space left on device``)."""
    return (e.strerror or str(e)).lower()


def tmp_name(target: Path, mark: str = TMP_MARK) -> Path:
    """A fresh hidden name beside ``target``: ``.{name}{mark}<hex>``."""
    return target.parent / f".{target.name}{mark}{uuid.uuid4().hex[:12]}"


def sha256_file(path: Path) -> tuple[str, int]:
    """Lowercase hex sha256 of a file's bytes (as ``sha256sum`` prints it), and its size.

    The one digest format of manifests and ``_SUCCESS``.
    """
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename) to disk, where the OS allows it."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _kind(mode: int) -> str | None:
    """What a non-regular file is, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_target(
    target: Path,
    what: str = "output",
    error: type[BatchrankError] = OutputError,
    *,
    folder: bool = False,
) -> None:
    """Refuse a target that is not a regular file or absent, or whose folder is a file.

    With ``folder``, the target must be a real folder or absent (a folder of part files is
    published there): a regular file, a link or a special node is refused.

    Raises:
        OutputError: (or ``error``: the checks before any work raise ConfigError, exit 2)
            naming the path and what it is.
    """
    if is_remote(local_or_remote(Path(target))):
        return  # an object key: any previous object is replaced by a copy, no node to clobber
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        mode = None
    except NotADirectoryError:  # an I/O condition (exit 5), whoever asks
        raise OutputError(
            f"{target}: {what} path lies under a file, not a folder; give a path in a folder"
        ) from None
    except OSError as e:
        raise OutputError(f"{target}: cannot inspect {what} path ({os_reason(e)})") from e
    if mode is None:
        return
    if folder:
        if not stat.S_ISDIR(mode):
            found = _kind(mode) or "a regular file"
            raise error(f"{target}: {what} path is {found}; expected a folder or no such path")
        return
    kind = _kind(mode)
    if kind is not None:
        raise error(
            f"{target}: {what} path is {kind}; expected a regular file name (batchrank "
            "publishes by atomic rename, which would replace the "
            f"{'link, not its target' if kind == 'a symbolic link' else 'node itself'})"
        )


def ensure_folder(folder: Path) -> None:
    """Create ``folder`` (and parents) and check it is writable.

    Raises:
        OutputError: naming the folder and why.
    """
    if is_remote(local_or_remote(Path(folder))):
        return  # object stores have no folders to create
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{folder}: cannot create output folder (a file has that name)") from None
    except OSError as e:
        raise OutputError(f"{folder}: cannot create output folder ({os_reason(e)})") from e
    if not os.access(folder, os.W_OK):
        raise OutputError(f"{folder}: output folder is not writable")


def _hold(path: Path) -> int:
    """Open ``path`` and take its exclusive lock: a live writer owns it while the fd is open."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise
    return fd


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def clean_leftovers(target: Path) -> list[Path]:
    """Remove what dead runs left beside ``target`` (temporaries, kept old versions).

    A temporary whose writer is alive holds its lock and is left alone, so two runs writing
    beside each other never delete each other's live files. Names are matched as plain
    prefixes, never as glob patterns (``top[1].csv`` is a valid output name).

    Returns:
        The paths removed.
    """
    removed: list[Path] = []
    prefixes = (f".{target.name}{TMP_MARK}", f".{target.name}{OLD_MARK}")
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(prefixes):
            continue
        path = Path(entry.path)
        try:
            fd = _hold(path)
        except BlockingIOError:
            continue  # a live writer's
        except OSError:
            fd = None  # unreadable or vanished: remove what can be removed
        try:
            _remove(path)
        finally:
            if fd is not None:
                os.close(fd)
        removed.append(path)
    return removed


class _LocalCommitted(Committed):
    def __init__(self, target: Path, backup: Path | None, folder: bool = False) -> None:
        self.target = target
        self.backup = backup
        self.folder = folder

    def rollback(self) -> None:
        try:
            if self.backup is None:
                _remove(self.target)
            elif self.folder and os.path.lexists(self.target):
                restore_dir(self.target, self.backup, tmp_name(self.target, OLD_MARK))
            else:
                os.replace(self.backup, self.target)
        except OSError as e:
            raise OutputError(f"{self.target}: cannot roll back ({os_reason(e)})") from e
        self.backup = None
        fsync_dir(self.target.parent)

    def finalize(self) -> None:
        if self.backup is not None:
            with contextlib.suppress(OSError):
                _remove(self.backup)
            self.backup = None


def _keep_previous(target: Path) -> Path | None:
    """Keep the file at ``target`` (if any) under an old-version name; return that name."""
    if not os.path.lexists(target):
        return None
    backup = tmp_name(target, OLD_MARK)
    try:
        os.link(target, backup)  # the target stays in place: no window without a file
    except OSError:
        os.rename(target, backup)
    return backup


class _LocalStaged(Staged):
    def __init__(self, target: Path, what: str, folder: bool = False) -> None:
        if is_remote(local_or_remote(target)):
            raise TypeError(f"{target}: an object-store target given to the local storage")
        self.target = target
        self.what = what
        self.folder = folder
        check_target(target, what, folder=folder)
        ensure_folder(target.parent)
        clean_leftovers(target)
        self._tmp = tmp_name(target)
        try:
            if folder:
                self._tmp.mkdir()
            else:
                os.close(os.open(self._tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            self._fd: int | None = _hold(self._tmp)
        except OSError as e:
            _remove(self._tmp)
            raise OutputError(f"{target}: cannot create {what} file ({os_reason(e)})") from e
        self._done = False

    @property
    def path(self) -> Path:
        return self._tmp

    def _release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def commit(self) -> Committed:
        if self._done:
            raise OutputError(f"{self.target}: {self.what} was already committed or discarded")
        check_target(self.target, self.what, folder=self.folder)  # it may have changed
        backup = None
        try:
            if self.folder:
                backup = replace_dir(self._tmp, self.target, tmp_name(self.target, OLD_MARK))
            else:
                with contextlib.suppress(OSError):
                    fd = os.open(self._tmp, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                backup = _keep_previous(self.target)
                try:
                    os.replace(self._tmp, self.target)
                except OSError:
                    if backup is not None:
                        _remove(backup)
                    raise
        except OSError as e:
            self.discard()
            code = errno.errorcode.get(e.errno or 0, "")
            why = os_reason(e) + (f", {code}" if code else "")
            raise OutputError(f"{self.target}: cannot commit {self.what} ({why})") from e
        self._done = True
        self._release()
        fsync_dir(self.target.parent)
        return _LocalCommitted(self.target, backup, self.folder)

    def discard(self) -> None:
        if self._done:
            return
        self._done = True
        self._release()
        with contextlib.suppress(OSError):
            _remove(self._tmp)


class LocalStorage(Storage):
    """Publishing on a local (or mounted) file system."""

    def stage(self, target: Path, what: str = "output") -> Staged:
        """A temporary file beside ``target``; see :class:`~batchrank.storage.base.Staged`."""
        return _LocalStaged(Path(target), what)

    def stage_dir(self, target: Path, what: str = "output") -> Staged:
        """A temporary folder beside ``target``, published by an atomic swap (replacing the
        folder there whole); the previous folder is kept until the commit is finalized."""
        return _LocalStaged(Path(target), what, folder=True)

    def withdraw(self, target: Path) -> Committed | None:
        """Move ``target`` aside under an old-version name; rollback restores it."""
        target = Path(target)
        if not os.path.lexists(target):
            return None
        backup = tmp_name(target, OLD_MARK)
        try:
            os.rename(target, backup)
        except OSError as e:
            raise OutputError(f"{target}: cannot move aside ({os_reason(e)})") from e
        fsync_dir(target.parent)
        return _LocalCommitted(target, backup, folder=os.path.isdir(backup))


LOCAL = LocalStorage()
"""The local-disk storage."""


@contextlib.contextmanager
def atomic_file(target: Path, what: str = "output") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success publish it there atomically."""
    with LOCAL.stage(Path(target), what) as tmp:
        yield tmp


@contextlib.contextmanager
def atomic_dir(target: Path, what: str = "output") -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success it replaces ``target``."""
    with LOCAL.stage_dir(Path(target), what) as tmp:
        yield tmp
