"""Top-k evaluation: list metrics (:mod:`.ranking`), baselines (:mod:`.baselines`), the
protocol that scores a bundle and compares it with them (:mod:`.protocol`), the plot
(:mod:`.plot`) and the job's quality gate (:mod:`.gate`). See docs/evaluation.md."""

from batchrank.metrics.ranking import METRICS, Lists, Truth, gini, list_metrics

__all__ = ["METRICS", "Lists", "Truth", "gini", "list_metrics"]
