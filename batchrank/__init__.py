"""batchrank: offline batch scoring of recommendation ranking models.

The public API is imported lazily, so ``import batchrank`` (and ``batchrank --help``) stays fast
and never imports TensorFlow or Keras until a function needs them.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "evaluate", "load_bundle", "score", "train"]

_LAZY = {
    "train": "batchrank.training",
    "evaluate": "batchrank.evaluation",
    "load_bundle": "batchrank.bundle",
    "score": "batchrank.scoring.api",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'batchrank' has no attribute {name!r}")
