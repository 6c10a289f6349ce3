"""Job files: loading into typed specs, every validation error, overrides and templated paths."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrank.errors import ConfigError
from batchrank.jobs.jobspec import JobSpec
from batchrank.jobs.loader import load_job, parse_date, parse_override

DATE = dt.date(2025, 1, 31)

BASE = """\
[job]
name = "t"

[score]
model = "../models/m"
pairs = ["../data/pairs.parquet"]
out = "../out/{date}/top.parquet"
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A folder with jobs/, data/ (pairs, movies, ratings), models/m/ and nothing else."""
    (tmp_path / "jobs").mkdir()
    data = tmp_path / "data"
    data.mkdir()
    pq.write_table(pa.table({"user_id": [1, 2], "movie_id": [10, 20]}), data / "pairs.parquet")
    pq.write_table(pa.table({"user_id": [1], "movie_id": [10]}), data / "more.parquet")
    pq.write_table(pa.table({"movie_id": [10, 20], "title": ["a", "b"]}), data / "movies.parquet")
    (data / "ratings.csv").write_text("user_id,movie_id,rating\n1,10,4\n2,20,3\n")
    (data / "users.csv").write_text("user_id\n1\n")
    (tmp_path / "models" / "m").mkdir(parents=True)
    return tmp_path


def write(project: Path, text: str, name: str = "job.toml") -> Path:
    path = project / "jobs" / name
    path.write_text(text)
    return path


def load(path: Path, *overrides: str, environ: dict[str, str] | None = None) -> JobSpec:
    return load_job(path, overrides=overrides, environ=environ or {}, date=DATE)


def error_of(path: Path, *overrides: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(path, *overrides, environ=environ)
    assert info.value.exit_code == 2
    return str(info.value)


def with_score(extra: str) -> str:
    return BASE + extra + "\n"


# --- loading ---------------------------------------------------------------------------------


def test_minimal_job_loads_with_defaults_and_paths_relative_to_the_job_file(
    project: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    job = load(write(project, BASE))
    assert job.name == "t"
    assert job.train is None
    s = job.score
    assert s.model == (project / "models" / "m").resolve()
    assert s.pairs == (str((project / "data" / "pairs.parquet").resolve()),)
    assert (s.top_k, s.format, s.layout, s.unknown, s.engine) == (
        10,
        "parquet",
        "long",
        "skip",
        "local",
    )
    assert job.output("r1") == (project / "out" / "2025-01-31" / "top.parquet").resolve()
    assert job.publish.success_marker is True
    assert job.latest_path == (project / "out" / "latest").resolve()


def test_the_sample_jobs_of_the_repository_load() -> None:
    root = Path(__file__).resolve().parents[2]
    for name in ("sample.toml", "movielens_nightly.toml"):
        job = load_job(root / "jobs" / name, environ={}, date=DATE)
        assert job.score.out.template.endswith(".parquet" if name == "sample.toml" else ".jsonl")
    nightly = load_job(root / "jobs" / "movielens_nightly.toml", environ={}, date=DATE)
    assert nightly.train is not None and not nightly.train.is_tfds
    assert nightly.train.retrain == "if-data-changed"
    assert nightly.score.model == nightly.train.out
    assert (nightly.score.pairs, nightly.score.top_k, nightly.score.layout) == (
        ("all",),
        20,
        "nested",
    )


def test_full_train_and_score_sections(project: Path) -> None:
    text = """\
[job]
name = "full"
preview_users = 2

[train]
ratings = "../data/ratings.csv"
items = "../data/movies.parquet"
preset = "seed"
out = "../models/{job}"
retrain = "if-data-changed"
epochs = 3
rating_scale = [1, 5]
seed = 7
test_fraction = 0.1

[score]
pairs = "../data/*.parquet"
items = "../data/movies.parquet"
top_k = 5
format = "jsonl"
layout = "nested"
unknown = "oov"
out = "../out/{date:%Y/%m/%d}/{job}-{run_id}.jsonl"
rejects = "../out/{date}/rejects.csv"
chunk_rows = 100
batch_size = 64
max_reject_fraction = 0.5
memory_budget_mb = 10

[publish]
latest = false
"""
    job = load(write(project, text))
    assert job.train is not None
    assert job.train.out == (project / "models" / "full").resolve()
    assert job.train.rating_scale == (1.0, 5.0)
    assert (job.train.epochs, job.train.seed, job.train.test_fraction) == (3, 7, 0.1)
    assert job.score.model == job.train.out  # defaults to [train] out, which may not exist yet
    assert job.score.pairs == (str((project / "data" / "*.parquet").resolve()),)
    assert job.output("abc") == (project / "out/2025/01/31/full-abc.jsonl").resolve()
    assert job.rejects("abc") == (project / "out/2025-01-31/rejects.csv").resolve()
    assert job.latest_path is None
    assert job.job.preview_users == 2


def test_templated_paths_place_work_lock_and_latest(project: Path) -> None:
    job = load(write(project, BASE))
    out = (project / "out").resolve()
    assert job.export_root == out
    assert job.work_dir == out / "2025-01-31" / ".batchrank-work" / "t-2025-01-31"
    assert job.lock_path == out / ".batchrank-t.lock"
    # the run id in a folder: work stays in the part that does not change from run to run
    job = load(write(project, BASE.replace("{date}/top", "{job}/{date}/{run_id}/top")))
    assert job.output("r9") == out / "t" / "2025-01-31" / "r9" / "top.parquet"
    assert job.work_dir == out / "t" / "2025-01-31" / ".batchrank-work" / "t-2025-01-31"
    assert job.export_root == out
    # no placeholder: everything sits beside the output
    job = load(write(project, BASE.replace("{date}/top", "top")))
    assert job.export_root == out and job.latest_path == out / "latest"


def test_date_placeholder_in_inputs(project: Path) -> None:
    (project / "data" / "2025-01-31").mkdir()
    pq.write_table(
        pa.table({"user_id": [1], "movie_id": [10]}), project / "data" / "2025-01-31" / "c.parquet"
    )
    job = load(write(project, BASE.replace("data/pairs.parquet", "data/{date}/c.parquet")))
    assert job.score.pairs == (str((project / "data/2025-01-31/c.parquet").resolve()),)
    msg = error_of(write(project, BASE.replace("data/pairs.parquet", "data/{run_id}/c.parquet")))
    assert "[score] pairs uses unknown placeholder {run_id}; this key allows {date}, {job}" in msg


# --- errors: unknown keys, types, required fields --------------------------------------------


def test_unknown_key_suggests_the_right_one(project: Path) -> None:
    msg = error_of(write(project, with_score("topk = 3")))
    assert msg.endswith("job.toml: [score] unknown key `topk` (did you mean `top_k`?)")
    assert "jobs/job.toml" in msg


def test_unknown_section_and_top_level_key(project: Path) -> None:
    msg = error_of(write(project, BASE + "[scoring]\ntop_k = 3\n"))
    assert "unknown section [scoring] (did you mean [score]?)" in msg
    msg = error_of(write(project, 'name = "x"\n' + BASE))
    assert "unknown top-level key `name`" in msg


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('top_k = "ten"', "[score] top_k must be an integer in [1, 100000]; received 'ten'"),
        ("top_k = 0", "[score] top_k must be an integer in [1, 100000]; received 0"),
        ("top_k = true", "[score] top_k must be an integer in [1, 100000]; received True"),
        ("top_k = 2.5", "[score] top_k must be an integer in [1, 100000]; received 2.5"),
        ("chunk_rows = -1", "[score] chunk_rows must be an integer in [1, 134217728]; received -1"),
        ("max_reject_fraction = 2", "[score] max_reject_fraction must be a number in [0, 1]"),
        ('max_reject_fraction = "x"', "[score] max_reject_fraction must be a number in [0, 1]"),
        ('layout = "wide"', '[score] layout must be one of "long" or "nested"; received \'wide\''),
        ('format = "jsonlines"', '(did you mean "jsonl"?)'),
        ('unknown = "ignore"', '[score] unknown must be one of "skip", "oov" or "fail"'),
        ('engine = "spark"', "[score] engine must be one of"),
        ("user_col = 3", "[score] user_col must be a non-empty string; received 3"),
        (
            "pairs = 5",
            '[score] pairs must be "all", a path, or a list of paths or globs; received 5',
        ),
        ("pairs = []", "[score] pairs must be"),
        ("items = 1", "[score] items must be a path (a non-empty string); received 1"),
    ],
)
def test_wrong_types_and_values_name_the_key_and_the_value(
    project: Path, line: str, expected: str
) -> None:
    key = line.split(" =")[0]
    text = "\n".join(ln for ln in BASE.splitlines() if not ln.startswith(f"{key} ")) + "\n"
    msg = error_of(write(project, text + line + "\n"))
    assert expected in msg
    assert msg.startswith(str(project / "jobs" / "job.toml") + ": ")


TRAIN = '[job]\nname = "t"\n[train]\nratings = "../data/ratings.csv"\nout = "x"\n'
SCORE_ALL = '[score]\nmodel = "../models/m"\npairs = "all"\nout = "o.parquet"\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (TRAIN.replace('"../data/ratings.csv"', "3") + SCORE_ALL, "[train] ratings must be a path"),
        (TRAIN + "epochs = 0\n" + SCORE_ALL, "[train] epochs must be an integer >= 1"),
        (
            TRAIN + "rating_scale = [5, 1]\n" + SCORE_ALL,
            "[train] rating_scale must be [min, max] with min < max, such as [1, 5]; "
            "received [5, 1]",
        ),
        (
            TRAIN + 'retrain = "sometimes"\n' + SCORE_ALL,
            '[train] retrain must be one of "always", "if-missing" or "if-data-changed"',
        ),
        (
            TRAIN + 'preset = "fast"\n' + SCORE_ALL,
            '[train] preset must be one of "seed", "default" or "features"',
        ),
        (
            '[job]\nname = "a b"\n' + SCORE_ALL,
            "[job] name must be a name of letters, digits",
        ),
        (
            '[job]\nname = "t"\npreview_users = -1\n' + SCORE_ALL,
            "[job] preview_users must be an integer >= 0",
        ),
        (
            '[job]\nname = "t"\n' + SCORE_ALL + "[publish]\nsuccess_marker = 1\n",
            "[publish] success_marker must be true or false",
        ),
        ("[job]\nname = 't'\nscore = 3\n", "[job] unknown key `score`"),
        ('[job]\nname = "t"\nscore = "x"\n[score]\n', "unknown key"),
        ("job = 3\n", "[job] must be a table (a section); received 3"),
    ],
)
def test_train_job_and_publish_errors(project: Path, text: str, expected: str) -> None:
    assert expected in error_of(write(project, text))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[score]\nmodel = "../models/m"\npairs = "all"\nout = "o.parquet"\n',
            "missing section [job]",
        ),
        (
            '[job]\ndescription = "x"\n[score]\nmodel = "../models/m"\npairs = "all"\nout = "o"\n',
            "[job] missing required key `name`",
        ),
        ('[job]\nname = "t"\n', "missing section [score]"),
        (
            '[job]\nname = "t"\n[score]\nmodel = "../models/m"\npairs = "all"\n',
            "[score] missing required key `out`",
        ),
        (
            '[job]\nname = "t"\n[score]\nmodel = "../models/m"\nout = "o.parquet"\n',
            "[score] missing required key `pairs`",
        ),
        (
            '[job]\nname = "t"\n[score]\npairs = "all"\nout = "o.parquet"\n',
            "[score] missing required key `model` (or add a [train] step that writes it)",
        ),
        (
            '[job]\nname = "t"\n[train]\nout = "x"\n[score]\npairs = "all"\nout = "o.parquet"\n',
            "[train] missing required key `ratings`",
        ),
        (
            '[job]\nname = "t"\n[train]\nratings = "../data/ratings.csv"\n[score]\npairs = "all"\n'
            'out = "o.parquet"\n',
            "[train] missing required key `out`",
        ),
    ],
)
def test_missing_required_fields(project: Path, text: str, expected: str) -> None:
    assert expected in error_of(write(project, text))


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("data/pairs.parquet", "data/nope.parquet", "[score] pairs: pairs input not found: "),
        ("data/pairs.parquet", "data/*.csvx", "[score] pairs: pattern matches nothing: "),
        ("models/m", "models/nope", "[score] model: model bundle not found: "),
        (
            'out = "',
            'items = "../data/nope.parquet"\nout = "',
            "[score] items: items file not found",
        ),
        ('out = "', 'users = "../data/nope.csv"\nout = "', "[score] users: users file not found"),
    ],
)
def test_paths_that_do_not_exist(project: Path, old: str, new: str, expected: str) -> None:
    msg = error_of(write(project, BASE.replace(old, new, 1)))
    assert expected in msg
    assert "nope" in msg or "csvx" in msg


def test_missing_training_inputs(project: Path) -> None:
    text = '[job]\nname = "t"\n[train]\nratings = "../data/none.csv"\nout = "../models/x"\n'
    text += '[score]\npairs = "all"\nout = "../o.parquet"\n'
    assert "[train] ratings: ratings source not found: " in error_of(write(project, text))
    text = text.replace("none.csv", "ratings.csv").replace(
        'out = "../models/x"', 'out = "x"\nitems = "n.csv"'
    )
    assert "[train] items: items file not found: " in error_of(write(project, text))


def test_tfds_ratings_are_not_checked_for_existence(project: Path) -> None:
    text = '[job]\nname = "t"\n[train]\nratings = "tfds:movielens/100k-ratings"\nout = "../m2"\n'
    text += '[score]\npairs = "all"\nout = "../o.parquet"\n'
    job = load(write(project, text))
    assert job.train is not None and job.train.ratings == "tfds:movielens/100k-ratings"
    assert "tfds:NAME" in error_of(
        write(project, text.replace("tfds:movielens/100k-ratings", "tfds:"))
    )


def test_not_a_file_and_not_toml(project: Path) -> None:
    assert "job file not found" in error_of(project / "jobs" / "missing.toml")
    assert "is a folder" in error_of(project / "jobs")
    msg = error_of(write(project, "[job\nname = 1\n"))
    assert "not valid TOML" in msg and "line 1" in msg


# --- errors: conflicting options -------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "out", "expected"),
    [
        (
            'layout = "nested"',
            "top.csv",
            "[score] layout is 'nested', which needs format parquet or jsonl",
        ),
        ('format = "csv"\nlayout = "nested"', "top.csv", "which needs format parquet or jsonl"),
        (
            'format = "parquet"',
            "top.jsonl",
            "[score] format parquet contradicts out 'top.jsonl', whose suffix names jsonl",
        ),
        (
            'users = "../data/users.csv"',
            "top.parquet",
            '[score] users only applies with pairs = "all"',
        ),
        ('ray_address = "auto"', "top.parquet", '[score] ray_address needs engine = "ray"'),
        ("concurrency = 2", "top.parquet", '[score] concurrency needs engine = "ray"'),
    ],
)
def test_conflicting_options(project: Path, extra: str, out: str, expected: str) -> None:
    text = BASE.replace("top.parquet", out) + extra + "\n"
    assert expected in error_of(write(project, text))


def test_pairs_all_cannot_be_combined(project: Path) -> None:
    text = BASE.replace('["../data/pairs.parquet"]', '["all", "../data/pairs.parquet"]')
    assert '[score] pairs: "all" cannot be combined with other pairs' in error_of(
        write(project, text)
    )


def test_output_that_is_an_input_or_a_folder(project: Path) -> None:
    text = BASE.replace("../out/{date}/top.parquet", "../data/pairs.parquet")
    assert "is also an input in [score] pairs" in error_of(write(project, text))
    text = BASE.replace("../out/{date}/top.parquet", "../data")
    assert "is a folder" in error_of(write(project, text))


def test_model_other_than_the_trained_bundle_is_a_warning(project: Path) -> None:
    text = BASE.replace(
        "[score]", '[train]\nratings = "../data/ratings.csv"\nout = "../models/new"\n\n[score]'
    )
    job = load(write(project, text))
    assert len(job.warnings) == 1 and "is not the bundle [train] writes" in job.warnings[0]


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (
            "../out/{dat}/top.parquet",
            "[score] out uses unknown placeholder {dat} (did you mean {date}?)",
        ),
        ("../out/{}/top.parquet", "[score] out has malformed braces"),
        ("../out/{date/top.parquet", "[score] out has malformed braces"),
    ],
)
def test_bad_placeholders(project: Path, template: str, expected: str) -> None:
    assert expected in error_of(write(project, BASE.replace("../out/{date}/top.parquet", template)))


# --- overrides ---------------------------------------------------------------------------------


def test_set_overrides_typed_values(project: Path) -> None:
    path = write(project, BASE)
    job = load(
        path,
        "score.top_k=20",
        "score.format=jsonl",
        "score.out=../o/{date}.jsonl",
        "score.layout=nested",
        "job.preview_users=1",
    )
    assert job.score.top_k == 20
    assert (job.score.format, job.score.layout) == ("jsonl", "nested")
    assert job.job.preview_users == 1
    assert job.overrides == (
        "--set score.top_k=20",
        "--set score.format=jsonl",
        "--set score.out=../o/{date}.jsonl",
        "--set score.layout=nested",
        "--set job.preview_users=1",
    )
    data = project / "data"
    job = load(path, f'score.pairs=["{data / "pairs.parquet"}", "{data / "more.parquet"}"]')
    assert len(job.score.pairs) == 2


def test_set_paths_resolve_against_the_current_folder(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project / "data")
    job = load(write(project, BASE), "score.items=movies.parquet", "score.out=x/{date}.parquet")
    assert job.score.items == (project / "data" / "movies.parquet").resolve()
    assert job.output("r") == (project / "data" / "x" / "2025-01-31.parquet").resolve()


def test_set_errors_name_the_override(project: Path) -> None:
    path = write(project, BASE)
    msg = error_of(path, "score.top_k=ten")
    assert (
        "[score] top_k (set by --set score.top_k=ten) must be an integer in [1, 100000]; "
        "received 'ten'" in msg
    )
    assert (
        "[score] unknown key `topk` (set by --set score.topk=3) (did you mean `top_k`?)"
        in error_of(path, "score.topk=3")
    )
    assert "unknown section `scor` (did you mean `score`?)" in error_of(path, "scor.top_k=1")
    for bad in ("top_k=3", "score.top_k", "score=3", ".x=1", "score.a.b=1"):
        assert "--set expects SECTION.KEY=VALUE" in error_of(path, bad)


def test_precedence_set_over_environment_over_file(project: Path) -> None:
    path = write(project, with_score("top_k = 5"))
    assert load(path).score.top_k == 5
    env = {
        "BATCHRANK_SCORE_TOP_K": "7",
        "BATCHRANK_LOG_FORMAT": "json",  # another purpose: ignored
        "BATCHRANK_X": "1",
        "BATCHRANK_TRAIN_EPOCHS": "3",  # no [train] step in the file: ignored
    }
    job = load(path, environ=env)
    assert job.score.top_k == 7
    assert job.overrides == ("BATCHRANK_SCORE_TOP_K=7",)
    assert load(path, "score.top_k=9", environ=env).score.top_k == 9
    msg = error_of(path, environ={"BATCHRANK_SCORE_TOPK": "7"})
    assert "unknown key `topk` (set by BATCHRANK_SCORE_TOPK=7)" in msg


def test_parse_override_and_date() -> None:
    assert parse_override("score.top_k=20") == ("score", "top_k", 20)
    assert parse_override("train.rating_scale=[1, 5]") == ("train", "rating_scale", [1, 5])
    assert parse_override('score.out="a=b.csv"') == ("score", "out", "a=b.csv")
    assert parse_override("score.out=a=b.csv") == ("score", "out", "a=b.csv")
    assert parse_override("publish.latest=false") == ("publish", "latest", False)
    assert parse_date("2025-01-31") == DATE
    for bad in ("2025-13-01", "31/01/2025", "2025-1-31", "today"):
        with pytest.raises(ConfigError, match="--date must be a date YYYY-MM-DD"):
            parse_date(bad)


def test_date_defaults_to_today(project: Path) -> None:
    job = load_job(write(project, BASE), environ={})
    assert job.date == dt.date.today()
