"""Finding a run's input files: files, folders and glob patterns, never batchrank's own files.

A folder is searched recursively (following symlinks, each real folder once:
:mod:`batchrank.scoring.walk`), skipping names that start with ``.`` or ``_`` (temporaries,
work folders, ``_SUCCESS``) and, in folders and pattern matches, the outputs, folders of parts
and rejects files batchrank wrote there (those with a manifest beside them, or a folder's
marker: :mod:`batchrank.scoring.guards`), so yesterday's export is never read back as today's
candidates. A folder of parts named explicitly is read, as an explicit file is.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from batchrank.errors import DataError
from batchrank.formats import GLOB_CHARS, INPUT_SUFFIXES, InputFormat
from batchrank.fs import REMOTE_SCHEMES, is_remote
from batchrank.scoring.guards import in_part_folder, is_own_artifact
from batchrank.scoring.reader import InputFile, parquet_file
from batchrank.scoring.remote_inputs import expand_remote
from batchrank.scoring.walk import glob_paths, walk
from batchrank.store_errors import remote_reason
from batchrank.uris import uri_scheme

__all__ = ["discover_inputs"]


def _is_hidden(name: str) -> bool:
    return name.startswith((".", "_"))


def _format_of(path: Path) -> InputFormat:
    fmt = INPUT_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"{path}: unknown file type {path.suffix or '(no extension)'!r}; "
            "expected .parquet or .csv"
        )
    return fmt


def _files_in_folder(folder: Path, own: dict[Path, set[str]]) -> list[Path]:
    found = []
    for root, dirs, files in walk(folder):
        dirs[:] = [
            d for d in dirs if not _is_hidden(d) and not is_own_artifact(Path(root) / d, own)
        ]
        for name in files:
            path = Path(root) / name
            if (
                not _is_hidden(name)
                and path.suffix.lower() in INPUT_SUFFIXES
                and not is_own_artifact(path, own)
            ):
                found.append(path)
    if not found:
        raise DataError(f"{folder}: folder holds no .parquet or .csv files")
    return found


def _expand(spec: str | Path, own: dict[Path, set[str]]) -> list[Path]:
    if uri_scheme(spec) in REMOTE_SCHEMES:
        return list(expand_remote(str(spec), own))  # type: ignore[arg-type]
    paths = _expand_unchecked(spec, own)
    for p in paths:
        try:
            p.stat()
        except OSError as e:  # a link loop or a dangling link
            raise DataError(f"{p}: cannot read file ({e.strerror or e})") from e
    return paths


def _expand_unchecked(spec: str | Path, own: dict[Path, set[str]]) -> list[Path]:
    path = Path(spec)
    if path.is_dir():
        return _files_in_folder(path, own)
    if path.exists():
        return [path]
    text = str(spec)
    if GLOB_CHARS & set(text):
        matches = glob_paths(os.path.expanduser(text))
        if not matches:
            raise DataError(f"{text}: pattern matches no files")
        out: list[Path] = []
        for m in matches:
            mp = Path(m)
            if mp.is_dir():
                if not is_own_artifact(mp, own):
                    out.extend(_files_in_folder(mp, own))
            elif not is_own_artifact(mp, own) and not in_part_folder(mp):
                out.append(mp)
        return out
    raise DataError(f"{text}: no such file or folder")


def _reason(path: Path, e: OSError) -> str:
    return remote_reason(e) if is_remote(path) else str(e.strerror)


def _describe(path: Path) -> InputFile:
    fmt = _format_of(path)
    try:
        st = path.stat()
    except OSError as e:
        raise DataError(f"{path}: cannot read file ({_reason(path, e)})") from e
    if st.st_size == 0:
        raise DataError(f"{path}: empty file")
    rows = None
    if fmt == "parquet":
        try:
            rows = parquet_file(path).metadata.num_rows
        except DataError:  # reported by validate_inputs
            rows = None
    return InputFile(path=path, format=fmt, size=st.st_size, mtime=st.st_mtime, rows=rows)


def discover_inputs(specs: Sequence[str | Path]) -> list[InputFile]:
    """Find the input files named by ``specs``.

    Each spec is a file, a folder (every ``*.parquet`` / ``*.csv`` file under it, recursively,
    skipping files and folders whose names start with ``.`` or ``_``, such as ``_SUCCESS``, and
    batchrank's own outputs and rejects files), or a glob pattern (``*``, ``?``, ``[``; ``**``
    recurses). A pattern's matches are taken like
    specs of their own: files must be .parquet or .csv, folders are searched.

    Args:
        specs: files, folders or patterns.

    Returns:
        The files sorted by resolved path, each once.

    Raises:
        DataError: a spec matches nothing, a folder holds no input files, a file has another
            extension, or a file is empty (zero bytes).
    """
    if not specs:
        raise DataError("no input files given")
    by_path: dict[Path, Path] = {}
    own: dict[Path, set[str]] = {}  # per folder: batchrank's outputs and rejects there
    for spec in specs:
        for p in _expand(spec, own):
            by_path.setdefault(p.resolve(), p)
    return [_describe(p) for p in sorted(by_path)]
