"""TensorFlow is the ``tfds`` extra: without it, a ``tfds:`` source is one line naming the
extra, exit 2 (issue 16, item 5). The venv has TensorFlow, so its absence is simulated by an
import hook that refuses ``tensorflow`` and ``tensorflow_datasets`` as an uninstalled package
would."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.jobs.test_job_run import run

_HIDDEN = ("tensorflow", "tensorflow_datasets")


class _NotInstalled:
    """A meta path finder that answers as if the hidden packages were not installed."""

    @staticmethod
    def find_spec(name: str, path: object = None, target: object = None) -> None:
        if name.split(".", 1)[0] in _HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


@pytest.fixture
def without_tensorflow(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(sys.modules):
        if name.split(".", 1)[0] in _HIDDEN:
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_NotInstalled(), *sys.meta_path])
    yield


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_the_hook_hides_tensorflow(without_tensorflow: None) -> None:
    with pytest.raises(ImportError):
        import tensorflow_datasets  # noqa: F401


def test_train_from_tfds_without_the_extra(
    without_tensorflow: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "model"
    code = run("train", "--ratings", "tfds:movielens/100k-ratings", "--out", str(out), "--quiet")
    assert code == 2
    line = _one_error_line(capsys)
    assert "tfds:movielens/100k-ratings" in line
    assert "pip install 'batchrank[tfds]'" in line
    assert not out.exists()


def test_validate_a_tfds_job_without_the_extra(
    without_tensorflow: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = tmp_path / "job.toml"
    job.write_text(
        '[job]\nname = "net"\n[train]\nratings = "tfds:movielens/100k-ratings"\nout = "m"\n'
        '[score]\nmodel = "m"\npairs = ["p.csv"]\nout = "top.csv"\n'
    )
    (tmp_path / "p.csv").write_text("user_id,movie_id\n1,2\n")
    assert run("validate", str(job)) == 2
    assert "pip install 'batchrank[tfds]'" in capsys.readouterr().err
