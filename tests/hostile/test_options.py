"""Hostile option values: absurd numbers, unknown or contradicting suffixes, object-store URIs.

Each is refused before any work with one line and exit 2, whether it comes from a flag, the
Python API, a job file, ``--set`` or ``BATCHRANK_SCORE_*``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrank.cli.main import main
from batchrank.errors import ConfigError
from batchrank.fs import ObjectPath
from batchrank.jobs.loader import load_job
from batchrank.scoring.spec import ScoreSpec
from batchrank.uris import path_text


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    err = capsys.readouterr().err
    return code, err


def _score(capsys: pytest.CaptureFixture[str], *extra: str, out: str = "top.parquet") -> str:
    """Run ``batchrank score`` with ``extra``; return its one error line (asserting exit 2)."""
    argv = ["score", "--model", "no-model", "--pairs", "p.parquet", "--out", out, *extra]
    code, err = _run(argv, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("batchrank: error: "), err
    assert "Traceback" not in err
    return lines[0].removeprefix("batchrank: error: ")


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--memory-budget-mb", "inf", "a number in (0, 1048576]; received 'inf'"),
        ("--memory-budget-mb", "nan", "received 'nan'"),
        ("--memory-budget-mb", "1e400", "received '1e400'"),
        ("--memory-budget-mb", "0", "received '0'"),
        ("--memory-budget-mb", "-5", "received '-5'"),
        ("--memory-budget-mb", "2000000", "(0, 1048576]"),
        ("--batch-size", str(2**40), "an integer in [1, 4194304]; received '1099511627776'"),
        ("--batch-size", "2**40", "received '2**40'"),
        ("--chunk-rows", "1e20", "an integer in [1, 134217728]; received '1e20'"),
        ("--chunk-rows", "0", "received '0'"),
        ("--top-k", "-1", "an integer in [1, 100000]; received '-1'"),
        ("--top-k", "1000001", "received '1000001'"),
        ("--top-k", "true", "received 'true'"),
        ("--top-k", "2.0", "received '2.0'"),
        ("--max-reject-fraction", "1.5", "a number in [0, 1]"),
        ("--concurrency", "0", "an integer in [1, 4096]"),
        ("--gpus-per-worker", "-1", "a number in [0, 64]"),
        ("--layout", "wide", 'one of "long" or "nested"'),
        ("--unknown", "ignore", 'one of "skip", "oov" or "fail"'),
    ],
)
def test_absurd_flag_values_are_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], flag: str, value: str, expected: str
) -> None:
    line = _score(capsys, flag, value)
    assert line.startswith(f"{flag} must be "), line
    assert expected in line


@pytest.mark.parametrize("out", ["top.json", "top.tsv", "x.xlsx", "top", "top.parquet.gz"])
def test_unknown_output_suffix_is_refused(capsys: pytest.CaptureFixture[str], out: str) -> None:
    line = _score(capsys, out=out)
    assert line.startswith(f"--out '{out}': unknown output suffix")
    suffix = "".join(Path(out).suffixes[-2:]) or "no suffix"
    assert f"({suffix})" in line
    assert ".parquet, .csv, .jsonl, .ndjson (text ones may add .gz, .zst)" in line


def test_format_contradicting_the_suffix_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    line = _score(capsys, "--format", "csv", out="x.parquet")
    assert line == (
        "--format csv contradicts --out 'x.parquet', whose suffix names parquet; make them agree "
        "or drop the format"
    )
    assert "nested" in _score(capsys, "--layout", "nested", out="x.csv.gz")


@pytest.mark.parametrize(
    ("out", "fmt", "compression"),
    [
        ("top.csv.gz", "csv", "gzip"),
        ("top.csv.zst", "csv", "zstd"),
        ("top.jsonl.gz", "jsonl", "gzip"),
        ("top.jsonl.zst", "jsonl", "zstd"),
        ("TOP.NDJSON", "jsonl", None),
    ],
)
def test_compressed_text_outputs_are_accepted(out: str, fmt: str, compression: str) -> None:
    spec = ScoreSpec(model=Path("m"), pairs=("p.parquet",), out=Path(out), format=fmt)  # type: ignore[arg-type]
    assert (spec.format, spec.compression) == (fmt, compression)


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--out", "ftp://host/top.parquet"),
        ("--out", "http://bucket/top.parquet"),
        ("--pairs", "sftp://nn/cands/*.parquet"),
        ("--model", "https://host/m"),
        ("--items", "webdav://bucket/movies.parquet"),
        ("--users", "ftp://bucket/users.csv"),
        ("--rejects", "http://bucket/rejects.csv"),
        ("--work-dir", "ftp://bucket/work"),
    ],
)
def test_unsupported_uri_schemes_are_refused(
    capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    args = {"--model": "m", "--pairs": "p.parquet", "--out": "top.parquet"} | {flag: value}
    code, err = _run(["score", *[x for kv in args.items() for x in kv]], capsys)
    scheme = value.split("://")[0]
    assert code == 2
    assert err.strip() == (
        f"batchrank: error: `{flag} {value}`: unsupported URI scheme {scheme}://; expected a "
        "local path, file://, s3://, gs://, hdfs:// or abfs://"
    )
    assert not Path(f"{scheme}:").exists()


@pytest.mark.parametrize("value", ["s3:///key", "gs://", "s3:// b/k", "abfs:///m"])
def test_malformed_object_store_uris_are_refused(
    capsys: pytest.CaptureFixture[str], value: str
) -> None:
    code, err = _run(["score", "--model", value, "--pairs", "p.parquet", "--out", "o.csv"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"`--model {value}`: malformed URI; expected" in err


def test_file_uris_are_local_paths(tmp_path: Path) -> None:
    spec = ScoreSpec(
        model=Path("m"), pairs=(f"file://{tmp_path}/p.parquet",), out=f"file://{tmp_path}/top.csv"
    )  # type: ignore[arg-type]
    assert spec.out == tmp_path / "top.csv" and spec.pairs == (f"{tmp_path}/p.parquet",)
    # a URI made into a Path (which collapses //) is taken back as the object it names
    spec = ScoreSpec(model=Path("m"), pairs=("p.parquet",), out=Path("s3://b/top.parquet"))
    assert isinstance(spec.out, ObjectPath) and str(spec.out) == "s3://b/top.parquet"
    assert path_text("tfds:movielens/100k-ratings", "--ratings") == "tfds:movielens/100k-ratings"


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--ratings", "ftp://b/ratings.csv"), ("--out", "http://b/model"), ("--items", "ftp://b/m")],
)
def test_train_refuses_unsupported_uris(
    capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    args = {"--ratings": "r.csv", "--out": "m"} | {flag: value}
    code, err = _run(["train", *[x for kv in args.items() for x in kv]], capsys)
    assert code == 2
    assert "unsupported URI scheme" in err and len(err.strip().splitlines()) == 1


# --- the same values from job files, --set and the environment ---------------------------------


@pytest.fixture
def job(tmp_path: Path) -> Path:
    (tmp_path / "m").mkdir()
    pq.write_table(pa.table({"user_id": [1], "movie_id": [2]}), tmp_path / "p.parquet")
    path = tmp_path / "job.toml"
    path.write_text(
        '[job]\nname = "t"\n[score]\nmodel = "m"\npairs = "p.parquet"\nout = "o/top.parquet"\n'
    )
    return path


def _job_error(path: Path, *overrides: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_job(path, overrides=overrides, environ=env or {}, date=dt.date(2025, 1, 31))
    msg = str(info.value)
    assert len(msg.splitlines()) == 1 and msg.startswith(f"{path}: ")
    return msg


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("memory_budget_mb = inf", "memory_budget_mb must be a number in (0, 1048576]; received"),
        ("memory_budget_mb = nan", "[score] memory_budget_mb must be a number"),
        ("batch_size = 1099511627776", "[score] batch_size must be an integer in [1, 4194304]"),
        ("chunk_rows = 1e20", "chunk_rows must be an integer in [1, 134217728]; received 1e+20"),
        ("top_k = true", "[score] top_k must be an integer in [1, 100000]; received True"),
        ('out = "ftp://b/{date}/top.parquet"', "ftp://b/{date}/top.parquet`: unsupported URI"),
        ('pairs = ["http://bucket/p.parquet"]', "unsupported URI scheme http://"),
        ('out = "s3:///{date}/top.parquet"', "out s3:///{date}/top.parquet`: malformed URI"),
        ('out = "o/top.json"', "[score] out 'top.json': unknown output suffix (.json)"),
        ('format = "csv"', "[score] format csv contradicts out 'top.parquet'"),
    ],
)  # fmt: skip
def test_job_file_values(job: Path, line: str, expected: str) -> None:
    key = line.split(" = ")[0]
    text = "\n".join(ln for ln in job.read_text().splitlines() if not ln.startswith(key + " "))
    job.write_text(text + "\n" + line + "\n")
    assert expected in _job_error(job)


def test_set_and_environment_values_name_their_origin(job: Path) -> None:
    msg = _job_error(job, "score.memory_budget_mb=inf")
    assert "[score] memory_budget_mb (set by --set score.memory_budget_mb=inf) must be" in msg
    msg = _job_error(job, env={"BATCHRANK_SCORE_BATCH_SIZE": str(2**40)})
    assert f"(set by BATCHRANK_SCORE_BATCH_SIZE={2**40}) must be an integer in [1, 4194304]" in msg
    msg = _job_error(job, env={"BATCHRANK_SCORE_CHUNK_ROWS": "1e20"})
    assert "[score] chunk_rows (set by BATCHRANK_SCORE_CHUNK_ROWS=1e20) must be" in msg
    msg = _job_error(job, "score.batch_size=2**40")
    assert "received '2**40'" in msg
    msg = _job_error(job, "score.out=ftp://b/top.parquet")
    assert "unsupported URI scheme ftp://" in msg


def test_job_numeric_strings_are_numbers(job: Path) -> None:
    spec = load_job(
        job,
        overrides=['score.top_k="5"', "score.memory_budget_mb=0.5"],
        environ={"BATCHRANK_SCORE_CHUNK_ROWS": "1000"},
        date=dt.date(2025, 1, 31),
    )
    assert (spec.score.top_k, spec.score.memory_budget_mb, spec.score.chunk_rows) == (5, 0.5, 1000)


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("BATCHRANK_SCORE_MEMORY_BUDGET_MB", "inf"),
        ("BATCHRANK_SCORE_BATCH_SIZE", str(2**40)),
        ("BATCHRANK_SCORE_CHUNK_ROWS", "1e20"),
        ("BATCHRANK_SCORE_OUT", "ftp://bucket/top.parquet"),
    ],
)
def test_environment_of_the_score_command_is_validated_and_named(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, var: str, value: str
) -> None:
    monkeypatch.setenv(var, value)
    argv = ["score", "--model", "m", "--pairs", "p.parquet"]
    if var != "BATCHRANK_SCORE_OUT":
        argv += ["--out", "top.parquet"]
    code, err = _run(argv, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert (
        err.startswith(f"batchrank: error: {var} must be")
        or f"`{var} {value}`: unsupported URI scheme" in err
    )


def test_a_flag_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from batchrank.cli.score import command

    monkeypatch.setenv("BATCHRANK_SCORE_TOP_K", "3")
    monkeypatch.setenv("BATCHRANK_SCORE_LAYOUT", "nested")
    args = ["--model", "m", "--pairs", "p.parquet", "--out", "o.parquet"]
    ctx = command.make_context("score", [*args, "--top-k", "7"])
    assert (ctx.params["top_k"], ctx.params["layout"]) == (7, "nested")
