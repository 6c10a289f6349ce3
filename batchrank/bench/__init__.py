"""``batchrank bench``: the scorer side by side with a naive script and the model's ceiling.

Modules:

- :mod:`batchrank.bench.data`: the synthetic ML-100K-sized catalogue, ratings and pairs files,
  cached by name in a work folder.
- :mod:`batchrank.bench.variants`: each measured variant, run as its own child process
  (``python -m batchrank.bench.variants VARIANT ...``) that reports one JSON line.
- :mod:`batchrank.bench.process`: runs one command, measuring its wall, CPU and peak RSS.
- :mod:`batchrank.bench.harness`: runs the variants one at a time and collects their reports.
- :mod:`batchrank.bench.report`: the ratios, the JSON object and the printed table.
"""

from __future__ import annotations

__all__ = ["VARIANTS"]

VARIANTS = ("ceiling", "naive", "batchrank", "batchrank_no_table", "startup")
"""The variants ``batchrank bench`` knows, in the order they run."""
