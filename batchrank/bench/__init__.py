"""``batchrank bench``: the scorer side by side with a naive script and the model's ceiling.

Modules:

- :mod:`batchrank.bench.workload`: the scenarios (realistic ``grouped``/``shuffled`` candidate
  files, ``repeated``, ``all``) and the realistic pairs files.
- :mod:`batchrank.bench.bundle`: the realistic scenarios' seed-preset model.
- :mod:`batchrank.bench.data`: the synthetic ML-100K-sized catalogue, ratings and pairs files
  of ``repeated``, cached by name in a work folder.
- :mod:`batchrank.bench.agreement`: output comparisons (naive vs batchrank, bfloat16 vs float32).
- :mod:`batchrank.bench.variants`: each measured variant, run as its own child process
  (``python -m batchrank.bench.variants VARIANT ...``) that reports one JSON line.
- :mod:`batchrank.bench.process`: runs one command, measuring its wall, CPU and peak RSS.
- :mod:`batchrank.bench.harness`: runs the variants one at a time and collects their reports.
- :mod:`batchrank.bench.report`: the ratios, the JSON object and the printed table.
"""

from __future__ import annotations

__all__ = ["BATCHRANK_VARIANTS", "DEFAULT_CANDIDATES", "DEFAULT_MOVIES", "VARIANTS"]

DEFAULT_CANDIDATES = 100
"""Candidates per user of the realistic scenarios."""
DEFAULT_MOVIES = 50_000
"""Catalogue of the realistic scenarios."""

BATCHRANK_VARIANTS = ("batchrank", "batchrank_no_table", "batchrank_bf16")
"""The variants that run ``batchrank.score`` (default options, no score table, bfloat16)."""
VARIANTS = ("ceiling", "naive", *BATCHRANK_VARIANTS, "startup")
"""The variants ``batchrank bench`` knows, in the order they run."""
