"""`batchrank validate`: job file, bundle, input schemas and writable outputs, without work."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrank.bundle import BUNDLE_FORMAT, BUNDLE_KIND
from batchrank.cli.main import main
from batchrank.storage.lock import JobLock


def fake_bundle(folder: Path) -> Path:
    """Enough of a bundle for ``read_metadata`` (validate never loads the model)."""
    folder.mkdir(parents=True)
    meta = {
        "kind": BUNDLE_KIND,
        "format_version": BUNDLE_FORMAT,
        "preset": "seed",
        "created_at": "2025-01-01T00:00:00+00:00",
        "data": {"users": 2, "movies": 2, "user_id_kind": "int", "movie_id_kind": "int"},
    }
    (folder / "metadata.json").write_text(json.dumps(meta))
    for name in ("model.keras", "users.parquet", "items.parquet"):
        (folder / name).write_bytes(b"")
    return folder


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in [k for k in os.environ if k.startswith("BATCHRANK_")]:
        monkeypatch.delenv(key)
    fake_bundle(tmp_path / "model")
    pq.write_table(pa.table({"user_id": [1, 2], "movie_id": [10, 20]}), tmp_path / "a.parquet")
    (tmp_path / "b.csv").write_text("user_id,movie_id\n1,10\n2,20\n")
    pq.write_table(pa.table({"movie_id": [10], "title": ["x"]}), tmp_path / "movies.parquet")
    (tmp_path / "ratings.csv").write_text("user_id,movie_id,rating\n1,10,4\n")
    return tmp_path


def job(project: Path, score: str = "", train: str = "") -> Path:
    text = '[job]\nname = "v"\n' + train + "\n[score]\n"
    text += 'model = "model"\npairs = ["a.parquet", "b.csv"]\nitems = "movies.parquet"\n'
    text += 'out = "out/{date}/top.parquet"\n' + score
    path = project / "job.toml"
    path.write_text(text)
    return path


def validate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        main(["validate", *args])
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_valid_job_reports_every_check_and_writes_nothing(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = job(project)
    before = sorted(p.name for p in project.iterdir())
    code, out, _ = validate(capsys, str(path), "--date", "2025-01-31")
    assert code == 0, out
    for name in ("job file", "model", "pairs", "items", "output", "latest", "lock"):
        assert f"ok  {name}" in out
    assert "job `v` for 2025-01-31" in out
    assert "2 files" in out and "preset seed" in out
    assert "will be created" in out and ": free" in out
    assert out.rstrip().endswith("valid; nothing was run")
    assert sorted(p.name for p in project.iterdir()) == before


def test_bundle_that_training_will_create(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train = '[train]\nratings = "ratings.csv"\nout = "new-model"\npreset = "seed"\n'
    path = job(project, train=train)
    path.write_text(path.read_text().replace('model = "model"\n', ""))
    code, out, _ = validate(capsys, str(path))
    assert code == 0, out
    assert "does not exist yet; [train] will create it" in out
    assert "ratings.csv: columns user_id, movie_id, rating" in out
    assert "will train: no bundle yet" in out


@pytest.mark.parametrize(
    ("setup", "code", "message"),
    [
        ("no-metadata", 4, "not a batchrank model bundle (no metadata.json)"),
        ("bad-column", 3, "column `user_id` missing; found `uid`, `movie_id`"),
        ("bad-ids", 3, "none of the first 2 ids is a valid int id for the model"),
        ("bad-items", 3, "items column `title` missing"),
        ("bad-ratings", 3, "ratings column `rating` missing"),
        ("unwritable", 5, "cannot be created"),
        ("bad-key", 2, "unknown key `topk`"),
    ],
)
def test_failures_exit_with_the_code_a_run_would(
    project: Path, capsys: pytest.CaptureFixture[str], setup: str, code: int, message: str
) -> None:
    path = job(project)
    args = [str(path)]
    if setup == "no-metadata":
        (project / "model" / "metadata.json").unlink()
    elif setup == "bad-column":
        pq.write_table(pa.table({"uid": [1], "movie_id": [10]}), project / "a.parquet")
    elif setup == "bad-ids":
        (project / "b.csv").write_text("user_id,movie_id\nabc,10\ndef,20\n")
    elif setup == "bad-items":
        pq.write_table(pa.table({"movie_id": [10], "name": ["x"]}), project / "movies.parquet")
    elif setup == "bad-ratings":
        train = '[train]\nratings = "ratings.csv"\nout = "model"\n'
        (project / "ratings.csv").write_text("user_id,movie_id,stars\n1,10,4\n")
        path = job(project, train=train)
    elif setup == "unwritable":
        (project / "out").write_text("a file where the output folder should be")
    elif setup == "bad-key":
        args += ["--set", "score.topk=3"]
    got, _, err = validate(capsys, *args)
    assert got == code, err
    assert message in err


def test_lock_held_by_a_running_job_is_reported(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = job(project)
    with JobLock(project / "out" / ".batchrank-v.lock", job="v", run_id="busy-run"):
        code, out, _ = validate(capsys, str(path))
    assert code == 0
    assert "held by a running job" in out and "busy-run" in out


def test_latest_that_is_a_folder_or_under_a_file_is_refused(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "out" / "latest").mkdir(parents=True)  # default latest: out/latest
    code, out, err = validate(capsys, str(job(project)), "--date", "2025-01-31")
    assert code == 2, out + err
    assert "latest" in err and "is a folder" in err and "out/latest" in err
    assert len(err.strip().splitlines()) == 1
    (project / "pointer-parent").write_text("a file\n")
    path = job(project, score="")
    path.write_text(path.read_text() + '\n[publish]\nlatest = "pointer-parent/latest"\n')
    code, out, err = validate(capsys, str(path), "--date", "2025-01-31")
    assert code == 2, out + err
    assert "pointer-parent is a file" in err


def test_network_ratings_source_is_reported_not_checked(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train = '[train]\nratings = "tfds:movielens/100k-ratings"\nout = "model"\n'
    code, out, err = validate(capsys, str(job(project, train=train)), "--date", "2025-01-31")
    assert code == 0, out + err
    assert "ok  ratings" not in out
    assert "--  ratings" in out and "NOT CHECKED" in out
    assert "warning: ratings: tfds:movielens/100k-ratings: NOT CHECKED" in err
    assert "valid except ratings (not checked" in out


def test_validate_log_format_json(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train = '[train]\nratings = "tfds:movielens/100k-ratings"\nout = "model"\n'
    path = job(project, train=train)
    code, out, err = validate(capsys, str(path), "--date", "2025-01-31", "--log-format", "json")
    assert code == 0 and "--  ratings" in out
    (warning,) = [json.loads(line) for line in err.splitlines()]
    assert warning["event"] == "validate_warning" and warning["level"] == "warning"
    (project / "model" / "metadata.json").unlink()
    code, _, err = validate(capsys, str(path), "--log-format", "json")
    assert code == 4
    records = [json.loads(line) for line in err.splitlines()]
    assert records[-1]["event"] == "run_failed" and records[-1]["exit_code"] == 4
    assert records[-1]["command"] == "validate"


def test_run_refuses_a_folder_latest_before_any_work(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import batchrank
    from batchrank.errors import ConfigError

    (project / "out" / "latest").mkdir(parents=True)
    path = job(project)
    try:
        main(["run", str(path), "--date", "2025-01-31"])
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    err = capsys.readouterr().err
    assert code == 2, err  # not 4 from loading the fake bundle, nor a crash after publishing
    assert "is a folder" in err
    assert not (project / "out" / "2025-01-31").exists()
    with pytest.raises(ConfigError, match="is a folder"):
        batchrank.run_job(path, date="2025-01-31", environ={})
