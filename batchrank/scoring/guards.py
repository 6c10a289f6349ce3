"""Checks before any work that a run's outputs cannot clobber or be read back as its inputs.

- Every output path (``--out``, its manifest, ``--rejects``) is a regular file or absent
  (:func:`batchrank.storage.check_target`), and no two outputs share a path. A folder of parts
  (``--max-rows-per-file``) is absent, empty or batchrank's own
  (:func:`batchrank.scoring.parts.check_part_folder`): someone else's folder is never replaced.
- No output is an input: not a pairs file, the items or users file, nor inside the model bundle;
  no input lies inside a folder of parts (the run replaces that folder whole).
- No output lies where the pairs inputs are discovered (under a ``--pairs`` folder, or matched
  by a ``--pairs`` glob): the next run would score this run's export as candidates. Explicit
  files that exclude the output are fine.
- Discovery skips batchrank's own artifacts (:func:`is_own_artifact`): an output is recognised
  by the manifest beside it, a rejects file by the manifest that names it, a folder of parts
  also by the marker inside it.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from batchrank.errors import ConfigError, OutputError
from batchrank.formats import GLOB_CHARS
from batchrank.fs import ObjectPath, bucket_exists, is_remote
from batchrank.scoring.commit import MANIFEST_SUFFIX, manifest_path_of
from batchrank.scoring.parts import check_part_folder, is_part_folder, part_path
from batchrank.storage import check_target
from batchrank.store_errors import remote_reason
from batchrank.uris import to_path, uri_scheme

__all__ = ["check_output_paths", "in_part_folder", "is_own_artifact", "own_artifacts"]

log = logging.getLogger("batchrank.score")


def _abs(p: Path | str) -> Path:
    if uri_scheme(p) is not None:
        return to_path(p)  # a URI is absolute
    return Path(os.path.abspath(os.path.expanduser(str(p))))


def _under(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _same(a: Path, b: Path) -> bool:
    if a == b:
        return True
    if is_remote(a) or is_remote(b):
        return False  # no links in an object store: equal keys or different objects
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output_paths(
    *,
    out: Path,
    rejects: Path | None,
    pairs: Iterable[str],
    model: Path,
    items: Path | None = None,
    users: Path | None = None,
    inputs: Iterable[tuple[str, Path | str | None]] = (),
    parts: bool = False,
    table: bool = False,
) -> None:
    """Refuse outputs that would clobber an input or be read back as one (exit 2).

    ``inputs``: more (option, path) inputs no output may be (the rules' files, for instance).

    Args:
        parts: ``out`` is a folder of part files (``--max-rows-per-file``).
        table: ``out`` is a lake table's folder (its kind is checked by the table writer).

    Raises:
        ConfigError: naming the option, the path and the input it collides with.
    """
    outputs: list[tuple[str, Path]] = [
        ("--out", _abs(out)),
        ("manifest", _abs(manifest_path_of(out))),
    ]
    if rejects is not None:
        outputs.append(("--rejects", _abs(rejects)))
    for what, path in outputs:
        if parts and what == "--out":
            check_part_folder(path)
        elif not (table and what == "--out"):  # a table's folder is checked by its writer
            check_target(path, what, ConfigError)
        if is_remote(path):
            check_bucket(path, what)
    for i, (what, path) in enumerate(outputs):
        for other, opath in outputs[:i]:
            if _same(path, opath):
                raise ConfigError(f"{what} {path} is also the {other}; give them different paths")
    model_dir = _abs(model)
    named = [("--items", items), ("--users", users), *inputs]
    for what, path in outputs:
        if _under(path, model_dir) or _under(model_dir, path):
            raise ConfigError(
                f"{what} {path} lies in the model bundle {model_dir}; write outputs elsewhere"
            )
        for option, inp in named:
            if inp is not None and _same(path, _abs(inp)):
                raise ConfigError(f"{what} {path} is the {option} input; it would be overwritten")
            if parts and what == "--out" and inp is not None and _under(_abs(inp), path):
                _inside(option, _abs(inp), path)
        for spec in pairs:
            if spec == "all":
                continue
            _check_against_pairs(what, path, spec)
            if not parts or what != "--out":
                continue
            if GLOB_CHARS & set(spec):
                _check_against_pairs(what, part_path(path), spec)  # its parts, as a glob sees them
            elif _under(_abs(os.path.expanduser(spec)), path):
                _inside("--pairs", _abs(os.path.expanduser(spec)), path)


def _inside(option: str, inp: Path, folder: Path) -> None:
    raise ConfigError(
        f"{option} {inp} lies in the --out folder {folder}, which a run with "
        "--max-rows-per-file replaces whole; move the input or write elsewhere"
    )


def check_bucket(path: ObjectPath, what: str) -> None:
    """An object-store output's bucket exists and answers, before any work.

    Raises:
        OutputError: naming the URI (exit 5); whether the run may write shows at the upload,
            which comes before any final key changes.
    """
    try:
        if not bucket_exists(path):
            raise OutputError(f"{path.display()}: cannot write the {what} (bucket does not exist)")
    except OSError as e:
        raise OutputError(f"{path.display()}: cannot write the {what} ({remote_reason(e)})") from e


def _check_against_pairs(what: str, path: Path, spec: str) -> None:
    text = os.path.expanduser(spec)
    if GLOB_CHARS & set(text):
        pattern = str(_abs(text)) if not os.path.isabs(text) else text
        # fnmatch's * also matches '/', so this errs on the side of refusing.
        if fnmatch.fnmatchcase(str(path), pattern) or any(
            fnmatch.fnmatchcase(str(parent), pattern) for parent in path.parents
        ):
            raise ConfigError(
                f"{what} {path} matches the --pairs pattern {spec!r}: the next run would read "
                "this output as candidate pairs; write it outside the inputs"
            )
        return
    inp = _abs(text)
    # an object-store spec is taken as a prefix (no request needed: refusing errs safe)
    if (is_remote(inp) or inp.is_dir()) and _under(path, inp) and path != inp:
        raise ConfigError(
            f"{what} {path} lies under the --pairs folder {inp}: the next run would read this "
            "output as candidate pairs; write it outside the inputs"
        )
    if _same(path, inp):
        raise ConfigError(f"{what} {path} is a --pairs input; it would be overwritten")


def own_artifacts(folder: Path) -> set[str]:
    """Names of files in ``folder`` that batchrank wrote: outputs and rejects with a manifest."""
    names: set[str] = set()
    try:
        entries = [p.name for p in folder.iterdir()] if is_remote(folder) else os.listdir(folder)
    except OSError:
        return names
    for name in entries:
        if not name.endswith(MANIFEST_SUFFIX):
            continue
        names.add(name[: -len(MANIFEST_SUFFIX)])
        try:
            with (folder / name).open(encoding="utf-8") as f:
                record = json.load(f)
            rejects = record.get("output", {}).get("rejects")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(rejects, str):
            # by name: an export copied or synced elsewhere keeps the names, not the folders
            names.add(Path(rejects).name)
    return names


def is_own_artifact(path: Path, cache: dict[Path, set[str]] | None = None) -> bool:
    """Whether ``path`` is an output (a file or a folder of parts) or rejects file batchrank
    wrote (see :func:`own_artifacts`; a folder of parts also holds its marker)."""
    folder = path.parent
    if cache is None:
        cache = {}
    if folder not in cache:
        cache[folder] = own_artifacts(folder)
    own = path.name in cache[folder] or is_part_folder(path)
    if own:
        log.info(
            "skipped %s: batchrank wrote it (a manifest beside it names it), not an input",
            path,
            extra={"event": "input_skipped"},
        )
    return own


def in_part_folder(path: Path) -> bool:
    """Whether ``path`` lies in a folder of parts batchrank wrote (a pattern matched a part)."""
    inside = is_part_folder(path.parent)
    if inside:
        log.info(
            "skipped %s: a part of an output batchrank wrote (%s), not an input",
            path,
            path.parent,
            extra={"event": "input_skipped"},
        )
    return inside
