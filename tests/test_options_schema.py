"""One declaration of the score options: the CLI, job files, the runner and the docs agree."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import click
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrank.cli.score import command as score_command
from batchrank.errors import ConfigError
from batchrank.jobs.loader import KEYS, load_job
from batchrank.scoring.spec import SCORE_OPTIONS, ScoreSpec, options_markdown

ROOT = Path(__file__).resolve().parents[1]
PER_RUN_FLAGS = {"quiet", "as_json", "log_format"}
"""Flags of one invocation, not options of the scoring: no job key."""
CLI_ONLY = {"work_dir", "publish", "date"}
"""A job keeps its work folder beside its output (resume per job and date), names its Redis
target in [publish.redis] (the same RedisTarget options as --publish's URL query), and takes its
run date from the job's date."""


def _params() -> dict[str, click.Parameter]:
    return {str(p.name): p for p in score_command.params}


def test_cli_flags_and_job_keys_are_the_same_options() -> None:
    flags = set(_params()) - PER_RUN_FLAGS
    table = {o.name for o in SCORE_OPTIONS if o.scope == "table"}
    assert {o.job_key for o in SCORE_OPTIONS if o.scope == "table"} == set(KEYS["table"])
    job_keys = set(KEYS["score"]) | table  # [table] keys: table_mode is `[table] mode`
    assert flags - job_keys == CLI_ONLY
    assert job_keys - flags == set()
    declared = {o.name for o in SCORE_OPTIONS if o.scope != "run"}
    assert flags == declared
    assert "score_table" in job_keys  # drifted once: a job could not set it


@pytest.mark.parametrize("opt", [o for o in SCORE_OPTIONS if o.scope != "run"], ids=str)
def test_each_flag_has_the_fields_type_default_and_doc(opt: object) -> None:
    from batchrank.options import Option

    assert isinstance(opt, Option)
    param = _params()[opt.name]
    assert isinstance(param, click.Option)
    assert opt.flag in param.opts
    assert param.help is not None and param.help.startswith(opt.doc)
    assert param.required == opt.required
    if opt.kind == "choice":
        assert isinstance(param.type, click.Choice)
        assert tuple(param.type.choices) == opt.choices
    if not opt.required and opt.kind != "paths":
        assert param.default == opt.default


def test_flag_and_job_file_parse_a_value_to_the_same_type(tmp_path: Path) -> None:
    """``memory_budget_mb`` was an int in job files and a float on the command line."""
    params = _params()
    for opt in SCORE_OPTIONS:
        if opt.kind in ("int", "float") and opt.scope == "all":
            text = "1" if opt.kind == "int" or opt.low_open else "0.5"
            cli_value = params[opt.name].type.convert(text, params[opt.name], None)
            assert cli_value == opt.coerce(text) and type(cli_value) is type(opt.coerce(1))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "models" / "m").mkdir(parents=True)
    pq.write_table(pa.table({"user_id": [1], "movie_id": [2]}), tmp_path / "pairs.parquet")
    (tmp_path / "users.csv").write_text("user_id\n1\n")
    pq.write_table(pa.table({"movie_id": [2], "title": ["t"]}), tmp_path / "movies.parquet")
    return tmp_path


def _job(project: Path, score: str) -> Path:
    path = project / "job.toml"
    path.write_text(f'[job]\nname = "t"\n[score]\nmodel = "models/m"\n{score}\n')
    return path


def test_score_table_never_and_a_fractional_memory_budget_validate(project: Path) -> None:
    path = _job(
        project,
        'pairs = "pairs.parquet"\nout = "o/top.parquet"\nscore_table = "never"\n'
        "memory_budget_mb = 0.5",
    )
    job = load_job(path, environ={}, date=dt.date(2025, 1, 31))
    assert job.score.options.score_table == "never"
    assert job.score.options.memory_budget_mb == 0.5


def test_every_job_key_reaches_the_run_spec(project: Path) -> None:
    """The runner does not copy fields one by one: a key set in the file is in the run's spec."""
    text = """\
pairs = "all"
users = "users.csv"
items = "movies.parquet"
out = "o/{date}/{run_id}.jsonl"
rejects = "o/{date}/rejects-{run_id}.csv"
top_k = 3
format = "jsonl"
layout = "nested"
user_col = "u"
item_col = "i"
title_col = "name"
chunk_rows = 100
batch_size = 64
unknown = "oov"
max_reject_fraction = 0.5
memory_budget_mb = 0.5
engine = "ray"
ray_address = "auto"
concurrency = 2
gpus_per_worker = 0.5
score_table = "never"
csv_formulas = "keep"
exclude = ["pairs.parquet"]
deny_items = "movies.parquet"
allow_items = "movies.parquet"
min_stars = 2.5
max_rows_per_file = 1000
precision = "bfloat16"
"""
    job = load_job(_job(project, text), environ={}, date=dt.date(2025, 1, 31))
    spec = job.score.spec("r1", work_dir=project / "w", progress="none")
    set_in_file = {line.split(" = ")[0] for line in text.splitlines()} | {"model"}
    assert set_in_file == set(KEYS["score"]), "the test sets every key"
    defaults = ScoreSpec(model=Path("m"), pairs=("p.parquet",), out=Path("o.parquet"))
    for key in set_in_file - {"model", "pairs", "users", "items", "out", "rejects"}:
        assert getattr(spec, key) != getattr(defaults, key), key
    assert spec.out == (project / "o" / "2025-01-31" / "r1.jsonl").resolve()
    assert spec.rejects == (project / "o" / "2025-01-31" / "rejects-r1.csv").resolve()
    assert (spec.run_id, spec.work_dir, spec.progress) == ("r1", project / "w", "none")
    assert spec.users == (project / "users.csv").resolve()
    assert spec.exclude == (str((project / "pairs.parquet").resolve()),)
    assert spec.deny_items == (project / "movies.parquet").resolve()


def test_python_api_coerces_numeric_strings_and_refuses_the_rest() -> None:
    base = {"model": "m", "pairs": ["p.parquet"], "out": "o.parquet"}
    spec = ScoreSpec(**base, top_k="5", memory_budget_mb="0.5", chunk_rows=" 100 ")  # type: ignore[arg-type]
    assert (spec.top_k, spec.memory_budget_mb, spec.chunk_rows) == (5, 0.5, 100)
    assert isinstance(spec.model, Path) and spec.pairs == ("p.parquet",)
    for key, value in [("top_k", [5]), ("top_k", 5.5), ("layout", 3), ("user_col", 1)]:
        with pytest.raises(ConfigError, match=f"^{key} must be"):
            ScoreSpec(**base, **{key: value})  # type: ignore[arg-type]


def test_replace_revalidates() -> None:
    spec = ScoreSpec(model=Path("m"), pairs=("p.parquet",), out=Path("o.parquet"))
    with pytest.raises(ConfigError, match="batch_size must be an integer in"):
        dataclasses.replace(spec, batch_size=0)


def test_compression_comes_from_the_suffix() -> None:
    def spec(out: str) -> ScoreSpec:
        return ScoreSpec(model=Path("m"), pairs=("p.parquet",), out=Path(out))

    assert (spec("top.csv.gz").format, spec("top.csv.gz").compression) == ("csv", "gzip")
    assert (spec("top.jsonl.zst").format, spec("top.jsonl.zst").compression) == ("jsonl", "zstd")
    assert (spec("top.parquet").format, spec("top.parquet").compression) == ("parquet", None)


def test_docs_option_table_is_current() -> None:
    path = ROOT / "docs" / "options.md"
    assert path.read_text(encoding="utf-8") == options_markdown(), (
        "docs/options.md is stale: run `python -m batchrank.scoring.spec > docs/options.md`"
    )
    for opt in SCORE_OPTIONS:
        if opt.scope != "run":
            assert f"`{opt.flag}`" in options_markdown()


def test_keyword_options_refuse_unknown_and_missing_names_with_config_errors() -> None:
    base = {"model": "m", "pairs": ["p.parquet"], "out": "o.parquet"}
    assert ScoreSpec.from_options(**base, top_k="5").top_k == 5
    with pytest.raises(
        ConfigError, match=r"unknown score option `topk` \(did you mean `top_k`\?\)"
    ):
        ScoreSpec.from_options(**base, topk=5)
    with pytest.raises(ConfigError, match="missing score option `out`"):
        ScoreSpec.from_options(model="m", pairs=["p.parquet"])


def test_command_line_only_variables_do_not_break_job_runs(project: Path) -> None:
    """The environment is shared by `score` and `run`: BATCHRANK_SCORE_WORK_DIR is not a job key."""
    path = _job(project, 'pairs = "pairs.parquet"\nout = "o/top.parquet"')
    env = {"BATCHRANK_SCORE_WORK_DIR": "/tmp/w", "BATCHRANK_SCORE_TOP_K": "4"}
    job = load_job(path, environ=env, date=dt.date(2025, 1, 31))
    assert job.score.top_k == 4 and job.overrides == ("BATCHRANK_SCORE_TOP_K=4",)
    with pytest.raises(ConfigError, match="unknown key `work_dir`"):
        load_job(path, overrides=["score.work_dir=/tmp/w"], environ={}, date=dt.date(2025, 1, 31))
