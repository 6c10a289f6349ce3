"""``evaluate --plot``: NDCG@k and Recall@k against k, for the model and the baselines.

Each line carries its label at its right end (no legend to hunt through); matplotlib's
non-interactive Agg backend, so it runs on servers without a display.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from batchrank.errors import OutputError

__all__ = ["plot_curves"]

_LABELS = {"model": "model", "popular": "most popular", "random": "random"}
_COLORS = {"model": "#1f77b4", "popular": "#d62728", "random": "#7f7f7f"}


def plot_curves(result: dict[str, Any], path: Path, *, title: str = "") -> Path:
    """Draw ``result["curves"]`` (from ``evaluate_ranking(curve_k=...)``) into ``path``.

    Raises:
        OutputError: the image cannot be written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = result["curves"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, metric, name in zip(axes, ("ndcg", "recall"), ("NDCG@k", "Recall@k"), strict=True):
        for system, values in curves.items():
            ks = list(range(1, len(values[metric]) + 1))
            ax.plot(ks, values[metric], color=_COLORS.get(system), linewidth=2)
            ax.annotate(
                _LABELS.get(system, system),
                (ks[-1], values[metric][-1]),
                xytext=(6, 0),
                textcoords="offset points",
                va="center",
                color=_COLORS.get(system),
            )
        ax.set_xlabel("k (list length)")
        ax.set_title(name)
        ax.set_xlim(1, len(ks) * 1.25)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    if title:
        fig.suptitle(title)
    try:
        fig.savefig(path, dpi=110)
    except OSError as e:
        raise OutputError(f"{path}: cannot write the plot ({e.strerror or e})") from e
    finally:
        plt.close(fig)
    return path
