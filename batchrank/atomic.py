"""Atomic publication of files and folders: write under a temporary name beside the target,
then rename. A failed or killed writer leaves only a temporary name, which the next run removes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from batchrank.errors import OutputError

__all__ = ["TMP_MARK", "atomic_dir", "atomic_file", "clean_leftovers", "fsync_dir"]

TMP_MARK = ".batchrank-tmp-"


def _tmp_name(target: Path) -> Path:
    return target.parent / f".{target.name}{TMP_MARK}{uuid.uuid4().hex[:12]}"


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (the rename) to disk, where the OS allows it."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def clean_leftovers(target: Path) -> list[Path]:
    """Remove temporaries that earlier killed runs left beside ``target``; return them."""
    removed = []
    if target.parent.is_dir():
        for p in target.parent.glob(f".{target.name}{TMP_MARK}*"):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _ensure_parent(target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{target.parent}: cannot create output folder ({e.strerror})") from e
    if not os.access(target.parent, os.W_OK):
        raise OutputError(f"{target.parent}: output folder is not writable")


@contextlib.contextmanager
def atomic_file(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it onto ``target``."""
    target = Path(target)
    _ensure_parent(target)
    clean_leftovers(target)
    tmp = _tmp_name(target)
    try:
        yield tmp
        with contextlib.suppress(OSError):
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success it replaces ``target``."""
    target = Path(target)
    _ensure_parent(target)
    clean_leftovers(target)
    tmp = _tmp_name(target)
    tmp.mkdir()
    try:
        yield tmp
        if target.exists():
            old = _tmp_name(target)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
