"""A job's quality gate: the new model's metrics, checked before anything is published.

:func:`check_gate` runs after training and before scoring. It computes NDCG@k and Recall@k
with the ranking protocol of ``batchrank evaluate --ranking`` (the scorer's own lists, training
interactions excluded) and, when ``max_rmse`` is set, the RMSE, on ``[gate] ratings``; compares
them with the thresholds and with the previous published run's (read from the manifest the
``latest`` pointer leads to), and raises :class:`~batchrank.errors.QualityGateError` (exit 7)
naming each metric that failed and by how much. A run that passes records its figures in its
manifest (``job.gate``), where the next run finds them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from batchrank.errors import QualityGateError
from batchrank.jobs.jobspec import GateStep, JobSpec

__all__ = ["check_gate", "previous_metrics"]

log = logging.getLogger("batchrank.jobs")


def previous_metrics(job: JobSpec) -> dict[str, Any] | None:
    """The gate metrics of the run ``latest`` names, or None (no pointer, manifest or record)."""
    from batchrank.jobs.publish import read_latest
    from batchrank.scoring.commit import manifest_path_of

    pointer = job.latest_path
    output = read_latest(pointer) if pointer is not None else None
    if output is None:
        return None
    try:
        manifest = json.loads(manifest_path_of(output).read_text(encoding="utf-8"))
        metrics = manifest["job"]["gate"]["metrics"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return metrics if isinstance(metrics, dict) else None


def _measure(gate: GateStep, model: Path, job: JobSpec) -> dict[str, float]:
    from batchrank.sources import Columns

    s = job.score
    columns = Columns(user=s.user_col or "user_id", item=s.item_col or "movie_id")
    metrics: dict[str, float] = {}
    if gate.needs_ranking:
        from batchrank.metrics.protocol import evaluate_ranking

        r = evaluate_ranking(
            model,
            gate.ratings,
            exclude=gate.exclude,
            k=gate.k,
            columns=columns,
            threshold=gate.relevance,
        )
        metrics.update(ndcg=r["model"]["ndcg"], recall=r["model"]["recall"])
        metrics["users"] = r["users"]
    if gate.max_rmse is not None:
        from batchrank.evaluation import evaluate

        metrics["rmse"] = evaluate(model, gate.ratings, columns=columns)["rmse"]
    return metrics


def _failures(gate: GateStep, m: dict[str, float], prev: dict[str, Any] | None) -> list[str]:
    k = gate.k
    out = []
    for key, name, low in (
        ("ndcg", f"NDCG@{k}", gate.min_ndcg),
        ("recall", f"Recall@{k}", gate.min_recall),
    ):
        if low is not None and m[key] < low:
            out.append(f"{name} {m[key]:.4f} is below min_{key} {low:g} by {low - m[key]:.4f}")
    if gate.max_rmse is not None and m["rmse"] > gate.max_rmse:
        out.append(
            f"RMSE {m['rmse']:.4f} stars is above max_rmse {gate.max_rmse:g} by "
            f"{m['rmse'] - gate.max_rmse:.4f}"
        )
    if gate.max_drop is not None and prev is not None:
        for key, name in (("ndcg", f"NDCG@{k}"), ("recall", f"Recall@{k}")):
            before = prev.get(key)
            if isinstance(before, int | float) and before - m[key] > gate.max_drop:
                out.append(
                    f"{name} {m[key]:.4f} fell {before - m[key]:.4f} from the previous run's "
                    f"{before:.4f}, more than max_drop {gate.max_drop:g}"
                )
    return out


def check_gate(job: JobSpec, model: Path) -> dict[str, Any] | None:
    """Check the job's ``[gate]`` on ``model``; return what the manifest records (None: no gate).

    Raises:
        QualityGateError: a check failed (the message lists every failure).
    """
    gate = job.gate
    if gate is None:
        return None
    prev = previous_metrics(job)
    metrics = _measure(gate, model, job)
    failures = _failures(gate, metrics, prev)
    record = {"k": gate.k, "ratings": str(gate.ratings), "metrics": metrics, "previous": prev}
    if failures:
        log.error(
            "quality gate failed: %s",
            "; ".join(failures),
            extra={"event": "gate_failed", "metrics": metrics, "failures": failures},
        )
        raise QualityGateError(
            f"{job.source}: quality gate failed, nothing published: " + "; ".join(failures),
            failures=tuple(failures),
        )
    if gate.max_drop is not None and prev is None:
        log.info("quality gate: no previous run's metrics, max_drop not checked")
    log.info(
        "quality gate passed: %s",
        ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "users"),
        extra={"event": "gate_passed", "metrics": metrics},
    )
    return record
