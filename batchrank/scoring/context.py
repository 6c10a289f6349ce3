"""The run context: every value a scoring run is defined by, fixed before any work starts.

:func:`batchrank.scoring.prepare.prepare` builds one :class:`RunContext`; the engines read it
and never call back into anything mutable. Its fragments (:class:`Fragment`) are the run's units
of resumable work: one input file, or one block of users of ``--pairs all``. The functions here
turn a context and a fragment into raw chunks and progress, and build the run's top-k state.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from batchrank.bundle import Bundle
from batchrank.fs import local_folder_for
from batchrank.scoring import cross, reader
from batchrank.scoring.rules import Rules
from batchrank.scoring.schema import id_type
from batchrank.scoring.spec import ScoreSpec
from batchrank.scoring.topk import TopK

__all__ = [
    "Fragment",
    "RunContext",
    "fragment_chunks",
    "fragment_work",
    "new_topk",
    "spill_prefix",
]


@dataclass(frozen=True)
class Fragment:
    """A unit of resumable work: one input file, or one block of ``--pairs all`` users.

    Attributes:
        key: hash of everything that defines the fragment's partial result (its resume key).
        index: position in the run's fragments (the order rejects are written in).
        file_index: the input file (index into :attr:`RunContext.files`); None for a block.
        user_start: first user of the block (index into :attr:`RunContext.cross_users`).
        user_count: users in the block.
    """

    key: str
    index: int
    file_index: int | None = None
    user_start: int = 0
    user_count: int = 0


@dataclass(frozen=True, kw_only=True)
class RunContext:
    """A validated run, as plain values: what to score, with what, in which fragments."""

    spec: ScoreSpec
    bundle: Bundle
    files: tuple[reader.InputFile, ...]
    cross_users: pa.Array | None
    """``--pairs all``: the users to score (sorted, known); None for file input."""
    titles: pa.Table | None
    run_id: str
    fragments: tuple[Fragment, ...]
    boundaries: pa.Array
    """User-range partition boundaries for spilling: quantiles of the user vocabulary."""
    score_table: bool
    """Score every (user, movie) cell once and gather (decided from the input's size)."""
    total_work: int | None
    work_unit: reader.WorkUnit
    timings: Mapping[str, float]
    rules: Rules | None = None
    """The business rules (``--exclude``, ``--deny-items``, ...), None when none are set."""

    @property
    def user_type(self) -> pa.DataType:
        """Arrow type of user ids (the vocabulary's kind)."""
        return id_type(self.bundle.users.kind)

    @property
    def item_type(self) -> pa.DataType:
        """Arrow type of movie ids (the vocabulary's kind)."""
        return id_type(self.bundle.items.kind)

    @property
    def spill_dir(self) -> Path:
        """This run's spill folder beside the output (see :func:`spill_prefix`)."""
        folder = local_folder_for(self.spec.out.parent, "scratch")  # local for a remote --out
        return folder / f"{spill_prefix(self.spec.out)}{self.run_id}"


def spill_prefix(out: Path) -> str:
    """Name prefix of a run's scratch folders beside ``out`` (top-k spill, rejects spool).

    Not matched by ``atomic.clean_leftovers(out)``, which the writer calls while they are live.
    """
    return f".{out.name}.batchrank-spill-"


def new_topk(ctx: RunContext) -> TopK:
    """The run's top-k state, spilling into :attr:`RunContext.spill_dir`."""
    return TopK(
        ctx.spec.top_k,
        user_type=ctx.user_type,
        item_type=ctx.item_type,
        memory_budget_bytes=int(ctx.spec.memory_budget_mb * (1 << 20)),
        spill_dir=ctx.spill_dir,
        boundaries=ctx.boundaries,
    )


def fragment_chunks(ctx: RunContext, frag: Fragment) -> Iterator[reader.RawChunk]:
    """The raw chunks of one fragment, in order."""
    spec = ctx.spec
    if frag.file_index is not None:
        for chunk in reader.iter_chunks(
            [ctx.files[frag.file_index]],
            user_col=spec.user_column,
            item_col=spec.item_column,
            chunk_rows=spec.chunk_rows,
        ):
            chunk.file_index = frag.file_index
            yield chunk
        return
    assert ctx.cross_users is not None
    users = ctx.cross_users.slice(frag.user_start, frag.user_count)
    items = ctx.bundle.items
    yield from cross.iter_cross_join(
        users,
        len(items),
        items.ids,
        chunk_rows=spec.chunk_rows,
        user_index=ctx.bundle.users.lookup(users),
        item_index=np.arange(1, len(items) + 1, dtype=np.int32),
    )


def fragment_work(ctx: RunContext, frag: Fragment, raw: reader.RawChunk) -> int:
    """Progress made by one raw chunk of a fragment, in :attr:`RunContext.work_unit`."""
    if frag.file_index is None:
        return raw.table.num_rows
    return reader.chunk_work(raw, ctx.files[frag.file_index], ctx.work_unit)
