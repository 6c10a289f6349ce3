"""Hostile imports (``batchrank import``, ``bundle_from_keras``): a corrupt file, a class Keras
does not know, wrong input names, a wrong output shape, ids the tables do not cover, a model
with one input. Each is one line naming what is wrong, exit 4, and no bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import batchrank
from batchrank.errors import ModelError
from tests.byom.tutorial_model import RankingModel, SavableRankingModel, keras
from tests.jobs.test_job_run import run


def _functional(n_inputs: int = 2, outputs: int = 1, rows: int = 10) -> Any:
    names = ["user_id", "movie_id"][:n_inputs]
    ins = [keras.Input((), dtype="int32", name=n) for n in names]
    embs = [keras.layers.Embedding(rows, 4)(x) for x in ins]
    x = keras.layers.Concatenate(axis=1)(embs) if n_inputs > 1 else embs[0]
    x = keras.layers.Dense(8, activation="relu")(x)
    return keras.Model(dict(zip(names, ins, strict=True)), keras.layers.Dense(outputs)(x))


def _import(model: Any, out: Path, **kw: Any) -> Path:
    kw.setdefault("user_ids", range(1, 10))
    kw.setdefault("item_ids", range(1, 10))
    return batchrank.bundle_from_keras(model, out, **kw)


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("batchrank: error: ")
    return lines[0]


@pytest.fixture
def id_files(tmp_path: Path) -> tuple[Path, Path]:
    users, items = tmp_path / "users.csv", tmp_path / "items.csv"
    users.write_text("user_id\n" + "".join(f"{k}\n" for k in range(1, 10)))
    items.write_text("movie_id\n" + "".join(f"{k}\n" for k in range(1, 10)))
    return users, items


def _cli_import(model_file: Path, out: Path, ids: tuple[Path, Path], *extra: str) -> int:
    users, items = ids
    return run("import", "--keras", str(model_file), "--out", str(out), "--users", str(users),
               "--items", str(items), *extra)  # fmt: skip


def test_corrupt_keras_file(
    tmp_path: Path, id_files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "model.keras"
    bad.write_bytes(b"PK\x03\x04 this is not a keras archive")
    assert _cli_import(bad, tmp_path / "b", id_files) == 4
    line = _error_line(capsys)
    assert str(bad) in line and "not a readable .keras archive" in line
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("cut", ["half", "empty", "no-config"])
def test_truncated_or_empty_keras_file(
    cut: str, tmp_path: Path, id_files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Keras calls a truncated or empty archive "File not found"; we say what it is."""
    good = tmp_path / "good.keras"
    _functional().save(good)
    bad = tmp_path / "model.keras"
    if cut == "no-config":
        import zipfile

        with zipfile.ZipFile(bad, "w") as zf:
            zf.writestr("model.weights.h5", b"")
    else:
        data = good.read_bytes()
        bad.write_bytes(data[: len(data) // 2] if cut == "half" else b"")
    assert _cli_import(bad, tmp_path / "b", id_files) == 4
    line = _error_line(capsys)
    assert str(bad) in line and "not found" not in line
    assert ("config.json" if cut == "no-config" else "not a readable .keras archive") in line
    assert not (tmp_path / "b").exists()


def test_a_class_keras_does_not_know_is_named(
    tmp_path: Path, id_files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    model = SavableRankingModel(10, 10)
    model({"user_id": np.zeros(1, np.int32), "movie_id": np.zeros(1, np.int32)})
    path = tmp_path / "model.keras"
    model.save(path)
    assert _cli_import(path, tmp_path / "b", id_files) == 4
    line = _error_line(capsys)
    assert "`SavableRankingModel`" in line and "--custom-objects MODULE:SavableRankingModel" in line
    assert not (tmp_path / "b").exists()
    # named, it loads (the module is importable from here)
    ref = "tests.byom.tutorial_model:SavableRankingModel"
    assert _cli_import(path, tmp_path / "b", id_files, "--custom-objects", ref) == 0


def test_a_custom_object_that_does_not_import(
    tmp_path: Path, id_files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "model.keras"
    _functional().save(path)
    code = _cli_import(path, tmp_path / "b", id_files, "--custom-objects", "no_such_mod:Thing")
    assert code == 4
    assert "cannot import custom object 'no_such_mod:Thing'" in _error_line(capsys)


def test_wrong_input_names(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"inputs are movie_id, user_id; expected user, item"):
        _import(_functional(), tmp_path / "b", inputs=("user", "item"))
    subclassed = RankingModel(10, 10)  # its call() reads inputs["user_id"]
    with pytest.raises(ModelError, match=r"does not take \{'user', 'item'\} index inputs"):
        _import(subclassed, tmp_path / "b", inputs=("user", "item"))
    assert not (tmp_path / "b").exists()


def test_wrong_output_shape(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"output has shape \(2, 3\) for 2 pairs; expected"):
        _import(_functional(outputs=3), tmp_path / "b")


def test_ids_beyond_the_embedding_rows(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"user_ids: id 10 is beyond the embedding's 10 rows"):
        _import(_functional(rows=10), tmp_path / "b", user_ids=range(1, 12))
    with pytest.raises(ModelError, match=r"item_ids: 5 ids for an embedding of 10 rows; expect"):
        _import(_functional(rows=10), tmp_path / "b", item_ids=range(5), ids="vocabulary",
                user_ids=range(9))  # fmt: skip
    assert not (tmp_path / "b").exists()


def test_a_model_with_one_input(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"takes 1 input\(s\) \(user_id\); expected two"):
        _import(_functional(n_inputs=1), tmp_path / "b")


def test_generic_needs_an_importable_class(tmp_path: Path) -> None:
    class Local(keras.Model):  # defined in a function: the scorer could never import it
        def __init__(self, **kw: Any) -> None:
            super().__init__(**kw)
            self.e = keras.layers.Embedding(10, 2)

        def call(self, inputs: Any) -> Any:
            return keras.ops.sum(self.e(inputs["user_id"]) * self.e(inputs["movie_id"]), 1)

    with pytest.raises(ModelError, match=r"class .*Local is defined in .*cannot import"):
        _import(Local(), tmp_path / "b")


def test_duplicate_ids(tmp_path: Path) -> None:
    from batchrank.errors import ConfigError

    with pytest.raises(ConfigError, match=r"user_ids: id 3 is listed twice"):
        _import(_functional(), tmp_path / "b", user_ids=[1, 3, 3])
