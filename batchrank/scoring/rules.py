"""Business rules, applied to scored rows before top-k: what a list may never contain.

- ``--exclude PATH`` (repeatable; files, folders, globs): (user, movie) pairs never to recommend,
  typically the ratings the model was trained on. The pairs are read once, streamed chunk by
  chunk, and held as a sorted array of ``u * items.size + i`` (int64, vocabulary indices); past
  the memory budget they are partitioned by user range into files on disk
  (:class:`ExcludeSet`), of which a chunk loads only those its users fall in.
- ``--deny-items PATH`` / ``--allow-items PATH``: movies never / the only movies to recommend.
- ``--min-stars X``: candidates predicted below ``X`` stars (or not a number) are dropped.

:func:`apply_rules` filters a scored chunk; each removed row is counted under the first rule
that removes it, in the order above (:data:`RULE_COUNT_KEYS`). Rules are a pure function of
each row, so the output does not depend on chunk size or engine. With ``--unknown oov``, rows
scored with the OOV row are matched on their raw ids (pairs and movies unknown to the model
are kept for that, in memory; otherwise they cannot occur and are only counted).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batchrank.scoring import discover, reader
from batchrank.scoring.exclude import ExcludeSet, load_exclude, pair_text
from batchrank.scoring.schema import MOVIE_ID, STARS, USER_ID, I, U

if TYPE_CHECKING:
    from batchrank.bundle import Bundle
    from batchrank.scoring.spec import ScoreSpec

__all__ = [
    "RULE_COUNT_KEYS",
    "ExcludeSet",
    "Rules",
    "apply_rules",
    "load_exclude",
    "load_rules",
    "rule_counts",
    "rule_inputs",
]

RULE_COUNT_KEYS = ("excluded_pairs", "denied_items", "not_allowed_items", "below_min_stars")
"""Count keys of rows removed by a rule, one per rule, in the order rules apply."""


def _load_items(path: Path, spec: ScoreSpec, bundle: Bundle) -> tuple[np.ndarray, pa.Array, int]:
    """A deny/allow list: a mask over item indices, its unknown ids, how many ids it held."""
    from batchrank.scoring.cross import read_user_subset

    ids = read_user_subset(path, spec.item_column, kind=bundle.items.kind, noun="movie")
    idx = bundle.items.lookup(ids)
    mask = np.zeros(bundle.items.size, dtype=bool)
    mask[idx[idx != 0]] = True
    unknown = ids.filter(pa.array(idx == 0))
    return mask, unknown, len(ids)


@dataclass
class Rules:
    """The rules of one run, loaded before any scoring (:func:`load_rules`)."""

    exclude: ExcludeSet | None = None
    deny: np.ndarray | None = None
    """Per item index: True for a denied movie (None: no deny list)."""
    deny_unknown: pa.Array | None = None
    allow: np.ndarray | None = None
    """Per item index: True for an allowed movie (None: no allow list, all allowed)."""
    allow_unknown: pa.Array | None = None
    min_stars: float | None = None
    files: tuple[reader.InputFile, ...] = ()
    """Every file the rules were read from (their identity enters the fragment keys)."""
    summary: dict[str, Any] = field(default_factory=dict)
    """What was loaded, for the manifest."""

    def close(self) -> None:
        """Remove the exclude set's partition files, if any."""
        if self.exclude is not None:
            self.exclude.close()


def load_rules(spec: ScoreSpec, bundle: Bundle) -> Rules | None:
    """Read the spec's rules against the bundle's vocabularies; None when it sets none.

    Raises:
        DataError: a rule file is missing, unreadable, lacks its id columns or holds bad ids.
    """
    if not (spec.exclude or spec.deny_items or spec.allow_items or spec.min_stars is not None):
        return None
    rules = Rules(min_stars=spec.min_stars)
    files: list[reader.InputFile] = []
    summary: dict[str, Any] = {"min_stars": spec.min_stars}
    if spec.exclude:
        rules.exclude, ex_files = load_exclude(
            spec.exclude,
            bundle.users,
            bundle.items,
            user_col=spec.user_column,
            item_col=spec.item_column,
            chunk_rows=spec.chunk_rows,
            budget_bytes=int(spec.memory_budget_mb * (1 << 20)),
            keep_unknown=spec.unknown == "oov",
        )
        files += ex_files
        summary["exclude"] = {
            "files": [str(f.path) for f in ex_files],
            "pairs": rules.exclude.pairs,
            "pairs_unknown_to_model": rules.exclude.unknown_pairs,
            "spilled": rules.exclude.folder is not None,
        }
    for name, path in (("deny", spec.deny_items), ("allow", spec.allow_items)):
        if path is None:
            continue
        mask, unknown, n = _load_items(path, spec, bundle)
        setattr(rules, name, mask)
        if spec.unknown == "oov" and len(unknown):
            setattr(rules, f"{name}_unknown", unknown)
        files += discover.discover_inputs([path])
        summary[f"{name}_items"] = {
            "file": str(path),
            "movies": n,
            "movies_unknown_to_model": len(unknown),
        }
    rules.files = tuple(files)
    rules.summary = summary
    return rules


def _isin(values: pa.Array, value_set: pa.Array | None) -> np.ndarray:
    if value_set is None or len(value_set) == 0:
        return np.zeros(len(values), dtype=bool)
    return np.asarray(pc.is_in(values, value_set=value_set).to_numpy(zero_copy_only=False))


def apply_rules(
    scored: pa.Table, mapped: pa.Table, rules: Rules | None
) -> tuple[pa.Table, dict[str, int]]:
    """Drop the scored rows a rule forbids; return the rest and the rows each rule removed.

    Args:
        scored: ``user_id, movie_id, score, stars``, row for row the mapped chunk's.
        mapped: the mapped chunk (its ``u`` and ``i`` indices).
        rules: the run's rules (None: the table is returned as it is, with no counts).
    """
    if rules is None:
        return scored, {}
    u = np.asarray(mapped.column(U).to_numpy(), dtype=np.int64)
    i = np.asarray(mapped.column(I).to_numpy(), dtype=np.int64)
    oov_u, oov_i = u == 0, i == 0
    gone = np.zeros(scored.num_rows, dtype=bool)
    counts = dict.fromkeys(RULE_COUNT_KEYS, 0)

    def drop(key: str, hit: np.ndarray) -> None:
        new = hit & ~gone
        counts[key] = int(new.sum())
        gone[new] = True

    movies = scored.column(MOVIE_ID)
    if rules.exclude is not None:
        hit = rules.exclude.contains(u, i) & ~oov_u & ~oov_i
        oov = oov_u | oov_i
        if rules.exclude.unknown is not None and oov.any():
            rows = np.flatnonzero(oov)
            take = pa.array(rows)
            keys = pair_text(scored.column(USER_ID).take(take), movies.take(take))
            hit[rows] = _isin(keys, rules.exclude.unknown)
        drop("excluded_pairs", hit)
    if rules.deny is not None:
        hit = rules.deny[i]
        if rules.deny_unknown is not None and oov_i.any():
            hit[oov_i] = _isin(movies.filter(pa.array(oov_i)), rules.deny_unknown)
        drop("denied_items", hit)
    if rules.allow is not None:
        ok = rules.allow[i].copy()
        if oov_i.any():
            ok[oov_i] = _isin(movies.filter(pa.array(oov_i)), rules.allow_unknown)
        drop("not_allowed_items", ~ok)
    if rules.min_stars is not None:
        stars = np.asarray(scored.column(STARS).to_numpy(zero_copy_only=False))
        with np.errstate(invalid="ignore"):
            drop("below_min_stars", ~(stars >= np.float32(rules.min_stars)))
    if gone.any():
        scored = scored.filter(pa.array(~gone))
    return scored, counts


def rule_counts(counts: Sequence[tuple[str, int]] | dict[str, int]) -> dict[str, int]:
    """The rule counts of a run's counts, every key present."""
    c = dict(counts)
    return {k: int(c.get(k, 0)) for k in RULE_COUNT_KEYS}


def rule_inputs(spec: ScoreSpec) -> list[tuple[str, Path | str | None]]:
    """The rules' input files as (flag, path), for the no-output-is-an-input guard."""
    return [
        *(("--exclude", p) for p in spec.exclude),
        ("--deny-items", spec.deny_items),
        ("--allow-items", spec.allow_items),
    ]
