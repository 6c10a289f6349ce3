"""Walking input folders and ``**`` patterns without looping on symlink cycles.

Input folders are searched following symlinks (a folder of links to day partitions is a
common layout), so a link to an ancestor would make :func:`os.walk` and ``glob("**")`` run
forever. Both walks here remember the real path of every folder they entered and enter each
only once; a pattern's matches are the same as :func:`glob.glob` with ``recursive=True`` gives,
except that a folder reached twice through links is listed once.
"""

from __future__ import annotations

import fnmatch
import functools
import glob
import os
from collections.abc import Iterator

__all__ = ["glob_paths", "match_parts", "walk"]


def walk(folder: str | os.PathLike[str]) -> Iterator[tuple[str, list[str], list[str]]]:
    """:func:`os.walk` following symlinks, entering each real folder once.

    Callers may prune ``dirs`` in place, as with :func:`os.walk`.
    """
    seen: set[str] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        yield root, dirs, files


@functools.lru_cache(maxsize=4096)
def _match(parts: tuple[str, ...], pats: tuple[str, ...]) -> bool:
    """Whether path components match pattern components, ``**`` spanning any number."""
    if not pats:
        return not parts
    head = pats[0]
    if head == "**":
        if _match(parts, pats[1:]):
            return True
        return bool(parts) and not parts[0].startswith(".") and _match(parts[1:], pats)
    if not parts:
        return False
    name = parts[0]
    # as glob: a wildcard does not match a leading dot
    if name.startswith(".") and not head.startswith(".") and glob.has_magic(head):
        return False
    return fnmatch.fnmatchcase(name, head) and _match(parts[1:], pats[1:])


def match_parts(parts: tuple[str, ...], pats: tuple[str, ...]) -> bool:
    """Whether a path's components match a pattern's (``**`` spans any number), as glob."""
    return _match(parts, pats)


def glob_paths(pattern: str) -> list[str]:
    """``glob.glob(pattern, recursive=True)``, safe on symlink loops, sorted."""
    if "**" not in pattern:
        return sorted(glob.glob(pattern))  # bounded by the pattern's depth
    parts = pattern.split(os.sep)
    only_dirs = parts[-1] == ""
    if only_dirs:
        parts = parts[:-1]
    first = next(k for k, p in enumerate(parts) if glob.has_magic(p))
    prefix = os.sep.join(parts[:first]) or (os.sep if pattern.startswith(os.sep) else "")
    pats = tuple(parts[first:])
    base = prefix or os.curdir
    if not os.path.isdir(base):
        return []
    found: set[tuple[str, ...]] = set()
    for root, _dirs, files in walk(base):
        rel = os.path.relpath(root, base)
        here = () if rel == os.curdir else tuple(rel.split(os.sep))
        if _match(here, pats):  # a folder; "base/**" matches base itself, as "base/"
            found.add(here)
        if not only_dirs:
            found.update((*here, f) for f in files if _match((*here, f), pats))
    out = {os.path.join(prefix, *p) for p in found if prefix or p}
    return sorted(out)
