"""The per-chunk stage both engines run: map ids and reject → predict → rescale → partial top-k.

:func:`finish_chunk` is :func:`predict_chunk` (queue the batches on the device, the rescale to
stars is inside the jitted function) then :func:`rank_chunk` (wait, build the scored table,
cut it to its partial top-k); the local engine ranks chunk N while chunk N+1 predicts.

:func:`score_chunk` is a pure function of a raw chunk and a :class:`StageContext` (the
vocabularies, the jitted predictor, ``k`` and the unknown-id policy). The local engine runs it
chunk by chunk (mapping in its reader thread: :func:`map_chunk` then :func:`finish_chunk`);
each Ray actor builds its own :class:`StageContext` once and runs the same function on its
batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from batchrank.scoring.ids import MappedChunk, UnknownPolicy, map_ids
from batchrank.scoring.ranking import partial_topk
from batchrank.scoring.reader import RawChunk
from batchrank.scoring.rules import Rules, apply_rules
from batchrank.scoring.schema import MOVIE_ID, SCORE, STARS, USER_ID, I, U, partial_schema

if TYPE_CHECKING:
    from batchrank.bundle import Bundle
    from batchrank.scoring.context import RunContext
    from batchrank.scoring.predict import Collect, Predictor, TablePredictor
    from batchrank.vocab import Vocabulary

__all__ = [
    "ChunkResult",
    "Predicting",
    "StageContext",
    "finish_chunk",
    "map_chunk",
    "predict_chunk",
    "rank_chunk",
    "score_chunk",
    "scored_table",
    "stage_context",
    "stage_for_run",
]


@dataclass(frozen=True)
class StageContext:
    """What the per-chunk stage needs, built once per process."""

    users: Vocabulary
    items: Vocabulary
    predictor: Predictor | TablePredictor
    top_k: int
    unknown: UnknownPolicy
    user_type: pa.DataType
    item_type: pa.DataType
    rules: Rules | None = None
    """Business rules applied between rescale and top-k (:mod:`batchrank.scoring.rules`)."""


@dataclass(frozen=True)
class ChunkResult:
    """One chunk's outcome: its partial top-k, its rejected rows and its counts."""

    partial: pa.Table
    """At most ``top_k`` rows per user (:func:`~batchrank.scoring.schema.partial_schema`)."""
    rejects: pa.Table | None
    """Rejected rows (:data:`~batchrank.scoring.schema.REJECTS_SCHEMA`), None when none."""
    counts: dict[str, int]
    """Rows per outcome (:data:`~batchrank.scoring.ids.COUNT_KEYS`)."""


def stage_context(
    bundle: Bundle,
    *,
    top_k: int,
    unknown: UnknownPolicy,
    batch_size: int,
    score_table: bool,
    rules: Rules | None = None,
    precision: str = "float32",
) -> StageContext:
    """Build the jitted predictor for ``bundle`` and the stage's other inputs."""
    from batchrank.scoring.predict import TablePredictor, make_predictor
    from batchrank.scoring.schema import id_type

    inner = make_predictor(bundle, batch_size=batch_size, precision=precision)
    predictor: Predictor | TablePredictor = (
        TablePredictor(inner, (bundle.users.size, bundle.items.size)) if score_table else inner
    )
    return StageContext(
        users=bundle.users,
        items=bundle.items,
        predictor=predictor,
        top_k=top_k,
        unknown=unknown,
        user_type=id_type(bundle.users.kind),
        item_type=id_type(bundle.items.kind),
        rules=rules,
    )


def stage_for_run(ctx: RunContext) -> StageContext:
    """The stage context of a prepared run."""
    spec = ctx.spec
    return stage_context(
        ctx.bundle,
        top_k=spec.top_k,
        unknown=spec.unknown,
        batch_size=spec.batch_size,
        score_table=ctx.score_table,
        rules=ctx.rules,
        precision=spec.precision,
    )


def map_chunk(raw: RawChunk, stage: StageContext) -> MappedChunk:
    """Cast and check a chunk's ids, reject bad rows, map ids to vocabulary indices.

    Raises:
        DataError: ``--unknown fail`` and an unknown id (naming its file and row).
    """
    return map_ids(raw, stage.users, stage.items, unknown=stage.unknown)


@dataclass(frozen=True)
class Predicting:
    """A mapped chunk whose batches are queued on the device (:func:`predict_chunk`)."""

    mapped: MappedChunk
    collect: Collect | None
    """Waits for the scores and stars; None for a chunk without rows."""


def predict_chunk(mapped: MappedChunk, stage: StageContext) -> Predicting:
    """Queue a mapped chunk's predictions and return at once (JAX runs asynchronously)."""
    t = mapped.table
    if not t.num_rows:
        return Predicting(mapped, None)
    return Predicting(
        mapped, stage.predictor.dispatch(t.column(U).to_numpy(), t.column(I).to_numpy())
    )


def scored_table(mapped: MappedChunk, scores: np.ndarray, stars: np.ndarray) -> pa.Table:
    """A mapped chunk with its predictions: ``user_id, movie_id, score, stars, u``.

    ``u`` (the user's vocabulary index) rides along to the partial top-k, which uses it to cut
    rows that cannot enter a user's top k before sorting; a filter that drops rows keeps it
    aligned for free.
    """
    t = mapped.table
    return pa.table(
        {
            USER_ID: t.column(USER_ID),
            MOVIE_ID: t.column(MOVIE_ID),
            SCORE: pa.array(scores, pa.float32()),
            STARS: pa.array(stars, pa.float32()),
            U: t.column(U),
        }
    )


def rank_chunk(pending: Predicting, stage: StageContext) -> ChunkResult:
    """Wait for a chunk's predictions (already rescaled to stars), apply the business rules and
    cut it to its partial top-k."""
    mapped = pending.mapped
    schema = partial_schema(stage.user_type, stage.item_type)
    ruled: dict[str, int] = {}
    if pending.collect is not None:
        scored = scored_table(mapped, *pending.collect())
        scored, ruled = apply_rules(scored, mapped.table, stage.rules)
        partial = partial_topk(scored, stage.top_k).cast(schema)
    else:
        partial = schema.empty_table()
    rejects = mapped.rejects if mapped.rejects is not None and mapped.rejects.num_rows else None
    return ChunkResult(partial=partial, rejects=rejects, counts={**mapped.counts, **ruled})


def finish_chunk(mapped: MappedChunk, stage: StageContext) -> ChunkResult:
    """Predict, rescale and cut a mapped chunk to its partial top-k."""
    return rank_chunk(predict_chunk(mapped, stage), stage)


def score_chunk(raw: RawChunk, stage: StageContext) -> ChunkResult:
    """The whole stage for one raw chunk: :func:`map_chunk` then :func:`finish_chunk`."""
    return finish_chunk(map_chunk(raw, stage), stage)
