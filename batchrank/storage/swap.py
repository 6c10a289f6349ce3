"""Replacing a folder in one step, and undoing it: the local disk's folder publish.

A file is replaced atomically by ``os.replace``; a folder cannot be (``rename`` onto a non-empty
folder fails). Linux's ``renameat2(RENAME_EXCHANGE)`` swaps two paths atomically, so a reader
sees the old folder or the new one, never neither. Where the kernel or the file system lacks it
(``ENOSYS``, ``EINVAL``: older kernels, some network file systems), the previous folder is renamed
aside and the new one renamed in: two renames, with a moment in between without a folder.

Called through ctypes because Python's ``os`` module does not expose ``renameat2``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path

__all__ = ["exchange", "replace_dir", "restore_dir"]

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_UNSUPPORTED = {errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP}


def _load() -> Callable[..., int] | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # not glibc >= 2.28, or not Linux
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


_RENAMEAT2 = _load()


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically.

    Returns:
        False (and nothing changed) when the OS or the file system cannot.

    Raises:
        OSError: the swap failed for another reason (a missing path, permissions).
    """
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in _UNSUPPORTED:
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def replace_dir(new: Path, target: Path, aside: Path) -> Path | None:
    """Publish the folder ``new`` at ``target``.

    Returns:
        Where the previous ``target`` now is (``new``'s old name after a swap, else ``aside``),
        or None when there was none. Nothing changed when it raises.
    """
    if not os.path.lexists(target):
        os.rename(new, target)
        return None
    if exchange(new, target):
        return new  # ``new``'s name now holds the previous folder
    os.rename(target, aside)
    try:
        os.rename(new, target)
    except OSError:
        os.rename(aside, target)  # never leave the previous folder under a hidden name
        raise
    return aside


def restore_dir(target: Path, previous: Path, trash: Path) -> None:
    """Undo :func:`replace_dir`: ``previous`` back at ``target``, the published folder removed;
    ``trash`` is a free name beside ``target`` for the fallback's two renames."""
    if not exchange(previous, target):
        os.rename(target, trash)
        os.rename(previous, target)
        previous = trash
    shutil.rmtree(previous, ignore_errors=True)
