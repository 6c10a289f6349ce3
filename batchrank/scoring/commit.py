"""The commit step: a run's output, rejects, manifest and certificates published as one unit.

Order (docs/DESIGN.md, README "Errors"): everything is first written under temporary names;
then the old manifest and certificates (a job's ``_SUCCESS``) are moved aside, the rejects file
and the output are renamed into place, and the new manifest and certificates last. Any failure
rolls every rename back, so the previous export stays whole and certified. A consumer trusts an
output only when its manifest (or ``_SUCCESS``) is present and names the output's sha256.

A folder of parts on an object store (:attr:`Staged.keeps_previous`) keeps the old manifest in
place: its parts go in beside the old ones, which the unit removes once the new manifest is
committed and before ``_SUCCESS`` (:meth:`batchrank.storage.Committed.settle`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchrank.errors import OutputError
from batchrank.storage import ANY, CommitUnit, Staged, sha256_file

__all__ = [
    "MANIFEST_SUFFIX",
    "Certificate",
    "PublishedFile",
    "commit_run",
    "manifest_path_of",
    "stage_json",
]

MANIFEST_SUFFIX = ".manifest.json"
"""An output's manifest is the output's name plus this."""


def manifest_path_of(out: Path) -> Path:
    """Where an output's manifest goes: ``<out>.manifest.json`` (the one rule)."""
    return out.with_name(out.name + MANIFEST_SUFFIX)


@dataclass(frozen=True)
class PublishedFile:
    """A file of the unit, as a certificate lists it."""

    path: Path
    sha256: str
    bytes: int


@dataclass(frozen=True)
class Certificate:
    """A file written last that vouches for the others (``_SUCCESS``)."""

    target: Path
    make: Callable[[Sequence[PublishedFile], Sequence[Mapping[str, Any]]], Staged]
    """Stages the certificate from the unit's files (output, manifest, rejects) and the reports
    of the sinks published with them (a Redis generation)."""


def stage_json(target: Path, record: dict[str, Any], what: str) -> Staged:
    """Stage ``record`` as indented, key-sorted JSON at ``target``."""
    staged = ANY.stage(target, what)
    try:
        text = json.dumps(record, indent=2, sort_keys=True, default=str) + "\n"
        staged.path.write_text(text, encoding="utf-8")
    except OSError as e:
        staged.discard()
        raise OutputError(f"{target}: cannot write the {what} ({e.strerror or e})") from e
    return staged


def commit_run(
    *,
    output: Staged,
    output_files: Sequence[PublishedFile],
    rejects: Staged | None,
    manifest: dict[str, Any],
    certificates: Sequence[Certificate] = (),
    sinks: Sequence[tuple[Staged, Mapping[str, Any]]] = (),
) -> None:
    """Publish a run's files as one unit, or nothing (see the module docstring).

    Args:
        output: the staged output file, or folder of part files.
        output_files: the data files it publishes (one, or each part), for the certificates.

    ``sinks`` (a staged Redis generation and its report) commit after the output and before
    the manifest and certificates, so ``_SUCCESS`` appears only once every sink is published.

    Raises:
        OutputError: a file cannot be written or renamed; everything is rolled back.
    """
    staged: list[Staged] = []
    certs: list[Staged] = []
    unit = CommitUnit()
    try:
        files = list(output_files)
        if rejects is not None:
            staged.append(rejects)
            digest, size = sha256_file(rejects.path)
            files.append(PublishedFile(rejects.target, digest, size))
        staged.append(output)
        staged.extend(s for s, _ in sinks)
        man_path = manifest_path_of(output.target)
        man = stage_json(man_path, manifest, "manifest")
        staged.append(man)
        digest, size = sha256_file(man.path)
        files.insert(len(output_files), PublishedFile(man_path, digest, size))
        if not (output.keeps_previous and rejects is None and not sinks):
            # the data replaces what the previous manifest describes: withdraw it first.
            # Only parts published beside the previous ones leave it true to the end.
            unit.withdraw(man_path)
        for cert in certificates:
            unit.withdraw(cert.target)
            certs.append(cert.make(files, [r for _, r in sinks]))
    except BaseException:
        output.discard()
        for s in [*staged, *certs]:
            s.discard()
        raise
    unit.commit(staged, certs)
