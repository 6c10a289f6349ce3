"""The run manifest, ``<out>.manifest.json``, written last and atomically."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from batchrank.atomic import atomic_file
from batchrank.errors import OutputError

__all__ = ["versions", "write_manifest"]


def versions() -> dict[str, str]:
    """Versions of batchrank and the libraries that shape its output.

    Read from the installed distributions' metadata, so recording them imports nothing (the
    scorer never imports Keras: that alone cost ~4 s of a cold start).
    """
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in ("batchrank", "keras", "jax", "jaxlib", "polars", "pyarrow"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "unknown"
    return out


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest`` as indented JSON, atomically."""
    try:
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
    except OSError as e:
        raise OutputError(f"{path}: cannot write the manifest ({e.strerror or e})") from e
