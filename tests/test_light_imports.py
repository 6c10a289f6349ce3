"""Scoring never imports Keras or TensorFlow, nor the lake libraries unless it writes a table:
`batchrank --help`, `batchrank score` and the Python API `batchrank.score` run in fresh
interpreters and report what they imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
HEAVY = ("keras", "tensorflow", "deltalake", "pyiceberg", "duckdb")

# Runs a snippet, then prints the top-level packages of HEAVY it imported (even on sys.exit).
REPORT = (
    "import atexit, sys\n"
    "atexit.register(lambda: print('HEAVY=' + ','.join(sorted("
    f"{{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))))\n"
)


def _imported(snippet: str) -> list[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.run(
        [sys.executable, "-c", REPORT + snippet],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=300,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("HEAVY=")]
    assert lines, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert proc.returncode == 0, proc.stderr[-2000:]
    heavy = lines[-1].removeprefix("HEAVY=")
    return heavy.split(",") if heavy else []


def _cli(*args: str) -> str:
    return (
        "from batchrank.cli.main import main\n"
        "try:\n"
        f"    main({list(args)!r})\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
    )


def test_help_imports_no_keras() -> None:
    assert _imported(_cli("--help")) == []


def test_cli_score_imports_no_keras(sample_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "top.csv"
    snippet = _cli("score", "--model", str(sample_bundle), "--pairs",
                   str(SAMPLE / "candidates.parquet"), "--out", str(out), "--quiet")  # fmt: skip
    assert _imported(snippet) == []
    assert out.exists()


def test_api_score_imports_no_keras(sample_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "top.parquet"
    snippet = (
        "import batchrank\n"
        f"m = batchrank.score(model={str(sample_bundle)!r}, "
        f"pairs=[{str(SAMPLE / 'candidates.csv')!r}], out={str(out)!r})\n"
        "assert m['counts']['users_written'] == 300\n"
    )
    assert _imported(snippet) == []
    assert out.exists()


def test_the_check_sees_keras_when_it_is_imported(sample_bundle: Path) -> None:
    """The control: loading the Keras model does import Keras, and the report says so."""
    snippet = f"import batchrank\nbatchrank.load_bundle({str(sample_bundle)!r})\n"
    assert "keras" in _imported(snippet)


def test_train_and_import_do_not_import_tensorflow(tmp_path: Path) -> None:
    """Keras asks `tf.available` when it saves a model, which would import all of TensorFlow
    (seconds, and absl lines on stderr) in `train` and `import`; only the tfds source needs it."""
    out = tmp_path / "m"
    snippet = _cli("train", "--ratings", str(SAMPLE / "ratings.parquet"), "--preset", "seed",
                   "--epochs", "1", "--out", str(out), "--quiet")  # fmt: skip
    heavy = _imported(snippet)
    assert "keras" in heavy and "tensorflow" not in heavy
    assert (out / "model.keras").exists()
