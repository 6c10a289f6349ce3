"""``batchrank evaluate --ranking``: table, JSON, plot, and agreement with the export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tests.jobs.test_job_run import run
from tests.metrics.test_list_metrics import reference

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"
# the JSON, spelled out here rather than read from the code under test
SYSTEM_KEYS = set("ndcg precision recall map mrr hit_rate coverage mean_popularity gini".split())  # noqa: SIM905


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """An 80/20 split of the sample ratings and a bundle trained on the 80."""
    from batchrank.training import train

    folder = tmp_path_factory.mktemp("split")
    data = pl.read_csv(SAMPLE / "ratings.csv").sample(fraction=1.0, shuffle=True, seed=3)
    n = int(data.height * 0.8)
    data[:n].write_csv(folder / "train.csv")
    data[n:].write_csv(folder / "test.csv")
    model = folder / "model"
    train(folder / "train.csv", model, preset="seed", epochs=2, verbose=0)
    return model, folder / "train.csv", folder / "test.csv"


def evaluate_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, object]:
    capsys.readouterr()
    assert run("evaluate", *args, "--json") == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_json_holds_model_and_both_baselines(
    split: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, train, test = split
    plot = tmp_path / "curves.png"
    args = ["--model", str(model), "--ratings", str(test), "--exclude", str(train), "--ranking"]
    result = evaluate_json(capsys, *args, "--k", "10", "--plot", str(plot))
    assert result["k"] == 10
    assert isinstance(result["users"], int) and result["users"] > 0
    assert str(result["relevance"]).startswith("rating >= 4")
    for system in ("model", "popular", "random"):
        assert set(result[system]) >= SYSTEM_KEYS  # type: ignore[arg-type]
    popular, rnd = result["popular"], result["random"]
    assert popular["mean_popularity"] > rnd["mean_popularity"]  # type: ignore[index]
    assert rnd["coverage"] > popular["coverage"]  # type: ignore[index]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # users without a relevant held-out rating are counted, not averaged
    t = pl.read_csv(test)
    relevant_users = t.filter(pl.col("rating") >= 4)["user_id"].n_unique()
    assert result["users"] == relevant_users
    assert result["users_without_relevant"] == t["user_id"].n_unique() - relevant_users
    # the table
    capsys.readouterr()
    assert run("evaluate", *args) == 0
    out = capsys.readouterr().out
    assert "NDCG@10" in out and "popular" in out and "random" in out


def test_model_ndcg_equals_the_one_of_the_score_export(
    split: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, train, test = split
    export = tmp_path / "top10.parquet"
    assert (
        run(
            "score", "--model", str(model), "--pairs", "all", "--exclude", str(train),
            "--top-k", "10", "--out", str(export), "--quiet",
        )
        == 0
    )  # fmt: skip
    common = ["--model", str(model), "--ratings", str(test), "--exclude", str(train), "--ranking"]
    scored = evaluate_json(capsys, *common)
    from_export = evaluate_json(capsys, *common, "--export", str(export))
    assert scored["model"] == from_export["model"]
    assert scored["popular"] == from_export["popular"]
    # and from the export by the formulas, independently of batchrank's metric code
    top = pl.read_parquet(export).sort("user_id", "rank")
    held = pl.read_csv(test)
    relevant: dict[int, set[int]] = {}
    for u, i in held.filter(pl.col("rating") >= 4).select("user_id", "movie_id").iter_rows():
        relevant.setdefault(u, set()).add(i)
    lists: dict[int, list[int]] = {}
    for u, i in top.select("user_id", "movie_id").iter_rows():
        lists.setdefault(u, []).append(i)
    movies = sorted(set(pl.read_csv(train)["movie_id"]))
    # the reference reads a catalogue of 1..n: renumber movies (those outside the model: 0)
    index = {m: n for n, m in enumerate(movies, start=1)}
    lists_n = {u: [index[i] for i in items] for u, items in lists.items()}
    rel_n = {u: {index[i] for i in s if i in index} for u, s in relevant.items()}
    extra = {u: sum(1 for i in s if i not in index) for u, s in relevant.items()}
    want = reference(lists_n, rel_n, extra, 10, [0] * (len(movies) + 1), len(movies))
    assert abs(scored["model"]["ndcg"] - want["ndcg"]) <= 1e-9  # type: ignore[index]
    assert abs(scored["model"]["recall"] - want["recall"]) <= 1e-9  # type: ignore[index]


def test_usage_errors_exit_2(
    split: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, train, test = split
    base = ["evaluate", "--model", str(model), "--ratings", str(test)]
    assert run(*base, "--plot", str(tmp_path / "x.png")) == 2
    assert "--plot needs --ranking" in capsys.readouterr().err
    assert run(*base, "--ranking") == 2
    assert "--exclude" in capsys.readouterr().err
    export = tmp_path / "top3.csv"
    assert (
        run(
            "score",
            "--model",
            str(model),
            "--pairs",
            "all",
            "--top-k",
            "3",
            "--out",
            str(export),
            "--quiet",
        )
        == 0
    )
    assert run(*base, "--ranking", "--exclude", str(train), "--export", str(export)) == 2
    assert "at most 3 movies" in capsys.readouterr().err


@pytest.mark.realdata
@pytest.mark.slow
def test_ml100k_model_beats_random(
    ml100k: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from batchrank.training import train

    data = pl.read_csv(
        ml100k / "u.data", separator="\t", has_header=False,
        new_columns=["user_id", "movie_id", "rating", "ts"],
    ).sample(fraction=1.0, shuffle=True, seed=42)  # fmt: skip
    n = int(data.height * 0.8)
    data[:n].select("user_id", "movie_id", "rating").write_csv(tmp_path / "train.csv")
    data[n:].select("user_id", "movie_id", "rating").write_csv(tmp_path / "test.csv")
    train(tmp_path / "train.csv", tmp_path / "model", preset="seed", verbose=0)
    result = evaluate_json(
        capsys, "--model", str(tmp_path / "model"), "--ratings", str(tmp_path / "test.csv"),
        "--exclude", str(tmp_path / "train.csv"), "--ranking",
    )  # fmt: skip
    assert 900 <= result["users"] <= 943  # type: ignore[operator]
    assert result["model"]["ndcg"] > 2 * result["random"]["ndcg"]  # type: ignore[index]
    assert np.isclose(result["threshold"], 4.0)  # type: ignore[arg-type]


def test_chunked_evaluation_equals_one_chunk(
    split: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Users evaluated a range at a time, spilled to disk from the first rows, give exactly
    the figures of one range holding every user; and those are the formulas' (to 1e-12)."""
    from batchrank.metrics import spill
    from batchrank.metrics.protocol import evaluate_ranking

    model, train, test = split
    export = tmp_path / "top12.jsonl"  # the nested JSON lines layout, streamed block by block
    assert (
        run(
            "score", "--model", str(model), "--pairs", "all", "--exclude", str(train),
            "--top-k", "12", "--format", "jsonl", "--layout", "nested", "--out", str(export),
            "--quiet",
        )
        == 0
    )  # fmt: skip

    def evaluate(chunk_users: int) -> dict[str, object]:
        return evaluate_ranking(
            model, test, exclude=[train], export=export, curve_k=12, chunk_users=chunk_users
        )

    whole = evaluate(10**9)
    monkeypatch.setattr(spill, "FLUSH_BYTES", 64)
    for chunk_users in (1, 7, 64, 299):
        assert evaluate(chunk_users) == whole, chunk_users
    # the same lists compressed, long CSV and nested JSON lines: the same figures
    import pyarrow as pa

    top = pl.read_ndjson(export).explode("items").unnest("items").sort("user_id", "rank")
    nested = export.read_bytes()
    for name, data in (("top12.csv.gz", top.write_csv().encode()), ("top12.jsonl.zst", nested)):
        with pa.output_stream(str(tmp_path / name), compression="detect") as out:
            out.write(data)
        again = evaluate_ranking(
            model, test, exclude=[train], export=tmp_path / name, curve_k=12, chunk_users=7
        )
        assert again == {**whole, "source": str(tmp_path / name)}, name
    # the one-range figures against the formulas, every metric
    held, tr = pl.read_csv(test), pl.read_csv(train)
    movies = sorted(set(tr["movie_id"]))
    index = {m: n for n, m in enumerate(movies, start=1)}
    counts = dict(tr.group_by("movie_id").len().iter_rows())
    relevant: dict[int, set[int]] = {}
    extra: dict[int, int] = {}
    for u, i in held.filter(pl.col("rating") >= 4).select("user_id", "movie_id").unique().rows():
        relevant.setdefault(u, set())
        if i in index:
            relevant[u].add(index[i])
        else:
            extra[u] = extra.get(u, 0) + 1
    lists: dict[int, list[int]] = {}
    for u, i in top.select("user_id", "movie_id").iter_rows():
        if u in relevant:
            lists.setdefault(u, []).append(index[i])
    popularity = [0] + [counts[m] for m in movies]
    want = reference(lists, relevant, extra, 10, popularity, len(movies))
    got = whole["model"]
    for metric, value in want.items():
        assert abs(got[metric] - value) <= 1e-12, metric  # type: ignore[index]
