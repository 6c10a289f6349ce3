"""``batchrank train`` and ``batchrank evaluate`` end to end, and bad input through the CLI.

The commands run in-process through :func:`batchrank.cli.main.main`, the console script's entry
point (errors become ``SystemExit`` with the documented code, as for a user).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import pytest

from batchrank.bundle import load_bundle
from batchrank.cli.main import main
from batchrank.storage import TMP_MARK

if TYPE_CHECKING:  # tests/scoring has a conftest too: import it for types only
    from conftest import TinyData

RMSE_LINE = re.compile(r"held-out RMSE: ([0-9.]+) stars, ([0-9.]+) label units \((\d+) ratings")


def run_ok(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run a command that must succeed; return its stdout."""
    assert main(list(args)) in (None, 0)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return out


def run_fail(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Run a command that must fail; return its exit code and its one stderr line."""
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    code = info.value.code
    assert isinstance(code, int)
    return code, lines[0]


def _no_leftovers(folder: Path) -> None:
    if folder.exists():
        assert [p.name for p in folder.iterdir() if TMP_MARK in p.name] == []


# --- train and evaluate -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_bundle(
    tmp_path_factory: pytest.TempPathFactory, tiny_ratings: TinyData
) -> tuple[Path, str]:
    """``batchrank train --preset seed --epochs 1`` on the tiny data: (bundle, stdout)."""
    out = tmp_path_factory.mktemp("cli") / "models" / "seed"  # parent folder created on demand
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(
            [
                "train",
                "--ratings",
                str(tiny_ratings.ratings),
                "--items",
                str(tiny_ratings.items),
                "--out",
                str(out),
                "--preset",
                "seed",
                "--epochs",
                "1",
            ]
        )
    assert rc in (None, 0)
    return out, buf.getvalue()


def test_train_prints_rmse_in_stars_and_label_units(cli_bundle: tuple[Path, str]) -> None:
    out, stdout = cli_bundle
    match = RMSE_LINE.search(stdout)
    assert match, stdout
    stars, label, count = float(match[1]), float(match[2]), int(match[3])
    assert stars == pytest.approx(4 * label, abs=5e-4)  # scale 1..5
    assert count == 300
    assert 0 < label < 0.6
    assert f"bundle written to {out}" in stdout
    meta = load_bundle(out).metadata
    assert meta["metrics"]["test_rmse"] == pytest.approx(stars, abs=1e-4)
    assert meta["metrics"]["test_rmse_normalized"] == pytest.approx(label, abs=1e-4)
    assert meta["preset"] == "seed"
    assert meta["hyperparameters"]["epochs"] == 1
    assert meta["metrics"]["epochs_run"] == 1
    _no_leftovers(out.parent)


def test_evaluate_json(
    cli_bundle: tuple[Path, str], tiny_ratings: TinyData, capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = cli_bundle
    stdout = run_ok(
        capsys, "evaluate", "--model", str(out), "--ratings", str(tiny_ratings.ratings), "--json"
    )
    result = json.loads(stdout)
    assert result["count"] == 1500
    assert result["rmse"] == pytest.approx(4 * result["rmse_normalized"])
    assert 0 < result["rmse_normalized"] < 0.6
    assert result["unknown_users"] == 0
    assert result["unknown_movies"] == 0


def test_evaluate_counts_unknown_ids(
    cli_bundle: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = cli_bundle
    path = tmp_path / "holdout.csv"
    path.write_text("user,movie,stars\n10,1000,4\n11,1000,3\n10,5,2\n")
    stdout = run_ok(
        capsys,
        "evaluate",
        "--model",
        str(out),
        "--ratings",
        str(path),
        "--user-col",
        "user",
        "--item-col",
        "movie",
        "--rating-col",
        "stars",
    )
    assert re.search(r"RMSE [0-9.]+ stars \([0-9.]+ label units\) over 3 ratings", stdout)
    assert "unknown users 1, unknown movies 1" in stdout


def test_half_star_scale(
    tiny_ratings: TinyData, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = tiny_ratings.frame.with_row_index()
    half = frame.select(
        pl.col("user_id").alias("uid"),
        pl.col("movie_id").alias("iid"),
        (pl.col("rating") - 0.5 * (pl.col("index") % 2)).alias("stars"),
    )
    assert half["stars"].min() == 0.5
    path = tmp_path / "half-stars.csv"
    half.write_csv(path)
    out = tmp_path / "half"
    cols = ["--user-col", "uid", "--item-col", "iid", "--rating-col", "stars"]
    stdout = run_ok(
        capsys,
        "train",
        "--ratings",
        str(path),
        *cols,
        "--rating-scale",
        "0.5,5",
        "--preset",
        "seed",
        "--epochs",
        "1",
        "--out",
        str(out),
        "--quiet",
    )
    match = RMSE_LINE.search(stdout)
    assert match, stdout
    assert float(match[1]) == pytest.approx(4.5 * float(match[2]), abs=5e-4)
    meta = load_bundle(out).metadata
    assert meta["rating_scale"] == [0.5, 5.0]
    assert (meta["label_transform"]["low"], meta["label_transform"]["high"]) == (0.5, 5.0)
    result = json.loads(
        run_ok(capsys, "evaluate", "--model", str(out), "--ratings", str(path), *cols, "--json")
    )
    assert result["rmse"] == pytest.approx(4.5 * result["rmse_normalized"])


def test_train_on_a_movielens_zip_with_repeated_and_accented_titles(
    tiny_ratings: TinyData, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """u.item may repeat a movie id: the first title wins and titles stay aligned."""
    frame = tiny_ratings.frame
    u_data = "".join(
        f"{u}\t{m}\t{r}\t{880000000 + k}\n"
        for k, (u, m, r) in enumerate(frame.select("user_id", "movie_id", "rating").iter_rows())
    )
    movies = sorted(frame["movie_id"].unique().to_list())
    lines = [f"{m}|Film {m} (1990)|01-Jan-1990||http://x|0|1\n" for m in movies]
    lines[1] = f"{movies[1]}|Amélie (2001)|01-Jan-2001||http://x|0|1\n"
    lines.insert(2, f"{movies[1]}|A later duplicate (2002)|||http://x|0|1\n")
    path = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ml-100k/u.data", u_data)
        zf.writestr("ml-100k/u.item", "".join(lines).encode("iso-8859-1"))
    out = tmp_path / "ml"
    run_ok(capsys, "train", "--ratings", str(path), "--preset", "seed", "--epochs", "1",
           "--out", str(out), "--quiet")  # fmt: skip
    bundle = load_bundle(out)
    titles = dict(zip(bundle.items.ids.to_pylist(), bundle.titles.to_pylist(), strict=True))
    assert len(titles) == len(movies)
    assert titles[movies[1]] == "Amélie (2001)"
    assert titles[movies[0]] == f"Film {movies[0]} (1990)"
    assert bundle.metadata["data"]["source"].startswith("movielens-zip:")


def test_same_seed_same_bundle(tiny_bundle: Path, tiny_ratings: TinyData, tmp_path: Path) -> None:
    """Training is reproducible: the tiny bundle's recipe again gives the same weights and
    metrics; and it does not import TensorFlow (only the tfds source needs it)."""
    from batchrank.training import train

    tf_before = "tensorflow" in sys.modules
    again = train(
        tiny_ratings.ratings,
        tmp_path / "again",
        preset="seed",
        items=tiny_ratings.items,
        epochs=2,
        verbose=0,
    )
    if not tf_before:
        assert "tensorflow" not in sys.modules
    first = load_bundle(tiny_bundle)
    assert again.metrics == first.metadata["metrics"]
    weights = zip(again.bundle.model.get_weights(), first.model.get_weights(), strict=True)
    assert all(np.array_equal(a, b) for a, b in weights)
    assert again.bundle.metadata["data"] == first.metadata["data"]


# --- bad input through the CLI ------------------------------------------------------------------

HEADER = "user_id,movie_id,rating\n"


def _zip_bytes() -> bytes:
    return b"PK\x03\x04" + bytes(np.random.default_rng(0).integers(0, 256, 200, dtype=np.uint8))


BAD = {
    "missing-file": (None, [], "ratings source not found"),
    "missing-columns": ("user,item,stars\n1,2,3\n", [], "found `user`, `item`, `stars`"),
    "outside-scale": (
        HEADER + "1,2,4\n2,2,6\n",
        ["--rating-scale", "1,5"],
        "outside the scale 1–5",
    ),
    "non-numeric-rating": (HEADER + "1,2,4\n2,2,good\n", [], "must be numeric; row 2 has 'good'"),
    "float-ids": (HEADER + "1.5,2,4\n2.5,2,3\n", [], "ids must be integers or strings"),
    "empty-file": ("", [], "ratings file is empty"),
    "header-only": (HEADER, [], "ratings file has no rows"),
    "one-rating": (HEADER + "1,2,4\n", [], "need at least 2 ratings"),
    "constant-ratings": (HEADER + "1,2,4\n2,2,4\n", [], "every rating is 4.0"),
    "corrupt-zip": (_zip_bytes(), [], "corrupt zip file"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_one_line_exit_3_no_bundle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    content, extra, message = BAD[case]
    name = "ml-100k.zip" if isinstance(content, bytes) else "ratings.csv"
    path = tmp_path / "in" / name
    if content is not None:
        path.parent.mkdir()
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    out = tmp_path / "models" / "bundle"
    code, line = run_fail(
        capsys,
        "train",
        "--ratings",
        str(path),
        "--out",
        str(out),
        "--preset",
        "seed",
        "--epochs",
        "1",
        "--quiet",
        *extra,
    )
    assert code == 3
    assert line.startswith("batchrank: error: ")
    assert str(path) in line, "names the file"
    assert message in line
    assert not out.exists()
    _no_leftovers(out.parent)


def test_missing_items_file_through_the_cli(
    tiny_ratings: TinyData, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    items = tmp_path / "no-titles.csv"
    out = tmp_path / "bundle"
    code, line = run_fail(capsys, "train", "--ratings", str(tiny_ratings.ratings), "--items",
                          str(items), "--out", str(out), "--quiet")  # fmt: skip
    assert code == 3
    assert line == f"batchrank: error: {items}: items file not found"
    assert not out.exists()


def test_evaluate_a_missing_model_is_exit_4(
    tiny_ratings: TinyData, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "no-model"
    code, line = run_fail(
        capsys, "evaluate", "--model", str(model), "--ratings", str(tiny_ratings.ratings)
    )
    assert code == 4
    assert line == f"batchrank: error: {model}: model bundle not found"


def test_evaluate_bad_ratings_is_exit_3(
    cli_bundle: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "r.csv"
    path.write_text(HEADER + "10,1000,x\n")
    code, line = run_fail(capsys, "evaluate", "--model", str(cli_bundle[0]), "--ratings", str(path))
    assert code == 3
    assert line.startswith(f"batchrank: error: {path}: column `rating` must be numeric")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rating-scale", "5,1"], "expected MIN < MAX"),
        (["--rating-scale", "one,five"], "expected MIN,MAX"),
        (["--preset", "bogus"], "bogus"),
        (["--epochs", "0"], "--epochs"),
        (["--test-fraction", "1"], "--test-fraction"),
    ],
)
def test_bad_flags_are_usage_errors(
    tiny_ratings: TinyData,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:

    out = tmp_path / "bundle"
    with pytest.raises(SystemExit) as info:
        main(["train", "--ratings", str(tiny_ratings.ratings), "--out", str(out), *args])
    _, err = capsys.readouterr()
    assert info.value.code == 2
    assert message in err
    assert "Traceback" not in err
    assert not out.exists()
