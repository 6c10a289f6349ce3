"""Finding input objects under an object-store URI: a key, a prefix, or a glob pattern.

The rules are :mod:`batchrank.scoring.discover`'s for local folders: a prefix is searched
recursively, skipping names that start with ``.`` or ``_`` (``_SUCCESS``, ``_batchrank-tmp``)
and batchrank's own exports; a pattern (``*``, ``?``, ``[``; ``**`` spans folders) matches keys
part by part, a matched "folder" is searched like a prefix. One listing per spec: the store is
asked for every object under the pattern's static prefix, once.
"""

from __future__ import annotations

import glob

from batchrank.errors import DataError
from batchrank.formats import GLOB_CHARS, INPUT_SUFFIXES
from batchrank.fs import ObjectPath, bucket_exists
from batchrank.scoring.guards import is_own_artifact
from batchrank.scoring.walk import match_parts
from batchrank.store_errors import remote_reason

__all__ = ["expand_remote"]


def _hidden(parts: tuple[str, ...]) -> bool:
    return any(p.startswith((".", "_")) for p in parts)


def _in_folder(folder: ObjectPath, own: dict[object, set[str]]) -> list[ObjectPath]:
    found = []
    for path, _info in folder.iter_files():
        rel = path.parts[len(folder.parts) :]
        if (
            not _hidden(rel)
            and path.suffix.lower() in INPUT_SUFFIXES
            and not is_own_artifact(path, own)  # type: ignore[arg-type]
        ):
            found.append(path)
    return found


def _glob(path: ObjectPath, own: dict[object, set[str]]) -> list[ObjectPath]:
    parts = path.parts
    first = next(k for k, p in enumerate(parts) if glob.has_magic(p))
    if first < 2:
        raise DataError(f"{path.display()}: a pattern cannot be in the bucket name")
    base = ObjectPath(*parts[:first])
    pats = tuple(parts[first:])
    out: list[ObjectPath] = []
    for f, _info in base.iter_files():
        rel = f.parts[first:]
        if match_parts(rel, pats):
            if not is_own_artifact(f, own):  # type: ignore[arg-type]
                out.append(f)
            continue
        for n in range(1, len(rel)):  # a matched folder: searched like a prefix
            if match_parts(rel[:n], pats):
                inside = rel[n:]
                if (
                    not _hidden(inside)
                    and f.suffix.lower() in INPUT_SUFFIXES
                    and not is_own_artifact(f, own)  # type: ignore[arg-type]
                ):
                    out.append(f)
                break
    if not out:
        raise DataError(f"{path.display()}: pattern matches no objects")
    return out


def expand_remote(text: str, own: dict[object, set[str]]) -> list[ObjectPath]:
    """The input objects one ``--pairs`` URI names.

    Raises:
        DataError: nothing matches, the prefix holds no input files, the bucket is missing,
            access is denied or the store cannot be reached (the message names the URI).
    """
    path = ObjectPath(text)
    try:
        if GLOB_CHARS & set(path.key):
            return _glob(path, own)
        info = path.info()
        kind = info.type.name
        if kind == "File":
            return [path]
        if kind == "Directory" or not path.key:
            found = _in_folder(path, own)
            if not found:
                raise DataError(f"{path.display()}: prefix holds no .parquet or .csv objects")
            return found
        if not bucket_exists(path):
            raise DataError(f"{path.display()}: cannot read (bucket does not exist)")
    except OSError as e:
        raise DataError(f"{path.display()}: cannot read ({remote_reason(e)})") from e
    raise DataError(f"{path.display()}: no such object or prefix")
