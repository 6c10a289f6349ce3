"""Hostile bundles: every way a bundle's parts can disagree is one exit-4 line, nothing written.

Some cases edit a file and leave the fingerprint stale (what a hand edit does); others also
re-fingerprint the bundle, as a buggy or foreign writer would, so the load-time shape and
metadata checks are exercised behind a fingerprint that matches.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from batchrank.cli.main import main

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"

# `batchrank` as a click command, so CliRunner sees main()'s error handling and exit codes.
batchrank_cli = click.Command(
    "batchrank",
    callback=lambda args: main(list(args)),
    params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)],
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)


def _meta(folder: Path) -> dict:
    return json.loads((folder / "metadata.json").read_text())


def _write_meta(folder: Path, meta: dict) -> None:
    (folder / "metadata.json").write_text(json.dumps(meta))


def _edit_weights(fn: Callable[[dict[str, np.ndarray]], None]) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        with np.load(folder / "weights.npz") as npz:
            arrays = {k: npz[k].copy() for k in npz.files}
        fn(arrays)
        np.savez(folder / "weights.npz", **arrays)  # type: ignore[arg-type]

    return edit


def _truncate_users(w: dict[str, np.ndarray]) -> None:
    w["user_embedding"] = w["user_embedding"][:10]


def _extra_movie_row(w: dict[str, np.ndarray]) -> None:
    w["item_embedding"] = np.concatenate([w["item_embedding"], w["item_embedding"][:1]])


def _drop_output_bias(w: dict[str, np.ndarray]) -> None:
    del w["rating_bias"]


def _rename_kernel(w: dict[str, np.ndarray]) -> None:
    w["dense_0_weights"] = w.pop("dense_0_kernel")


def _nan_weight(w: dict[str, np.ndarray]) -> None:
    w["dense_1_bias"][3] = np.nan


def _float64_kernel(w: dict[str, np.ndarray]) -> None:
    w["rating_kernel"] = w["rating_kernel"].astype(np.float64)


def _wide_output(w: dict[str, np.ndarray]) -> None:
    w["rating_kernel"] = np.repeat(w["rating_kernel"], 2, axis=1)
    w["rating_bias"] = np.repeat(w["rating_bias"], 2)


def _corrupt_bytes(name: str) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        data = bytearray((folder / name).read_bytes())
        for pos in range(len(data) // 3, len(data) // 3 + 64):
            data[pos] ^= 0xFF
        (folder / name).write_bytes(bytes(data))

    return edit


def _edit_meta(fn: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        meta = _meta(folder)
        fn(meta)
        _write_meta(folder, meta)

    return edit


def _scale_0_50(meta: dict) -> None:
    meta["label_transform"]["low"], meta["label_transform"]["high"] = 0.0, 50.0
    meta["rating_scale"] = [0.0, 50.0]


def _scale_disagrees(meta: dict) -> None:
    meta["label_transform"]["high"] = 50.0


def _scale_reversed(meta: dict) -> None:
    meta["label_transform"]["low"], meta["label_transform"]["high"] = 5.0, 1.0
    meta["rating_scale"] = [5.0, 1.0]


def _no_transform(meta: dict) -> None:
    del meta["label_transform"]


def _old_format(meta: dict) -> None:
    meta["format_version"] = 1


def _bad_columns(meta: dict) -> None:
    meta["columns"] = {"user": "userId"}


def _edit_users(fn: Callable[[object], object]) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        table = pq.read_table(folder / "users.parquet")
        pq.write_table(fn(table), folder / "users.parquet")

    return edit


def _unlink(name: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).unlink()


def _write(name: str, text: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_text(text)


CASES: dict[str, tuple[Callable[[Path], None], bool, str]] = {
    # name: (edit, re-fingerprint afterwards, expected part of the message)
    "truncated-embedding": (
        _edit_weights(_truncate_users),
        True,
        r"weights\.npz: array `user_embedding` has shape \(10, 32\); expected \(301, \*\)",
    ),
    "truncated-embedding-stale-fingerprint": (
        _edit_weights(_truncate_users),
        False,
        "do not match their fingerprint",
    ),
    "extra-row": (
        _edit_weights(_extra_movie_row),
        True,
        r"array `item_embedding` has shape \(202, 32\); expected \(201, 32\)",
    ),
    "missing-array": (_edit_weights(_drop_output_bias), True, "array `rating_bias` missing"),
    "renamed-key": (_edit_weights(_rename_kernel), True, "array `dense_0_kernel` missing"),
    "non-finite": (_edit_weights(_nan_weight), True, "`dense_1_bias` holds non-finite values"),
    "float64": (_edit_weights(_float64_kernel), True, "dtype float64; expected float32"),
    "two-outputs": (_edit_weights(_wide_output), True, r"`rating_kernel` has shape \(64, 2\)"),
    "corrupt-npz": (_corrupt_bytes("weights.npz"), False, "do not match their fingerprint"),
    "corrupt-npz-refingerprinted": (
        _corrupt_bytes("weights.npz"),
        True,
        r"weights\.npz: cannot read the weights",
    ),
    "missing-npz": (_unlink("weights.npz"), False, r"incomplete \(weights\.npz missing\)"),
    "metadata-scale-0-50": (_edit_meta(_scale_0_50), False, "do not match their fingerprint"),
    "metadata-scale-disagrees": (
        _edit_meta(_scale_disagrees),
        True,
        "`rating_scale` .* disagrees with `label_transform`",
    ),
    "metadata-scale-reversed": (_edit_meta(_scale_reversed), True, "expected finite numbers"),
    "metadata-no-transform": (_edit_meta(_no_transform), True, "key `label_transform` missing"),
    "metadata-bad-columns": (_edit_meta(_bad_columns), True, "`columns` is"),
    "metadata-format-1": (_edit_meta(_old_format), False, "version 1 is not supported"),
    "edited-vocabulary": (
        _edit_users(lambda t: t.slice(1)),  # type: ignore[attr-defined]
        False,
        "do not match their fingerprint",
    ),
    "edited-vocabulary-refingerprinted": (
        _edit_users(lambda t: t.slice(1)),  # type: ignore[attr-defined]
        True,
        r"array `user_embedding` has shape \(301, 32\); expected \(300, \*\)",
    ),
    "unsorted-vocabulary": (
        _edit_users(lambda t: t.take(list(range(t.num_rows))[::-1])),  # type: ignore[attr-defined]
        True,
        r"users\.parquet: ids not sorted and unique",
    ),
    "vocabulary-column-renamed": (
        _edit_users(lambda t: t.rename_columns(["uid", "index"])),  # type: ignore[attr-defined]
        True,
        r"users\.parquet: column `user_id` missing; found `uid`, `index`",
    ),
    "corrupt-vocabulary": (_corrupt_bytes("items.parquet"), False, "match their fingerprint"),
    "vocabulary-not-parquet": (
        _write("items.parquet", "movie_id,title\n1,x\n"),
        True,
        r"items\.parquet: cannot read the vocabulary",
    ),
    "missing-metadata": (_unlink("metadata.json"), False, r"no metadata\.json"),
    "metadata-not-json": (_write("metadata.json", "{not json"), False, "corrupt metadata"),
    "metadata-not-utf8": (
        lambda f: (f / "metadata.json").write_bytes(b"\xff\xfe{}"),
        False,
        "corrupt metadata",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_bundle_exits_4_with_one_line(
    case: str, sample_bundle: Path, tmp_path: Path, refingerprint: Callable[[Path], None]
) -> None:
    edit, refresh, expected = CASES[case]
    bundle = tmp_path / "model"
    shutil.copytree(sample_bundle, bundle)
    edit(bundle)
    if refresh:
        refingerprint(bundle)
    out = tmp_path / "out" / "top.parquet"
    args = ["score", "--model", str(bundle), "--pairs", str(SAMPLE / "candidates.parquet")]
    result = CliRunner().invoke(batchrank_cli, [*args, "--out", str(out), "--quiet"])
    err = result.stderr if hasattr(result, "stderr") else result.output
    assert result.exit_code == 4, (result.exit_code, result.output, result.exception)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("batchrank: error: "), err
    assert "Traceback" not in result.output
    assert re.search(expected, lines[0]), lines[0]
    assert not (tmp_path / "out").exists()


def test_refingerprinted_copy_of_a_good_bundle_still_scores(
    sample_bundle: Path, tmp_path: Path, refingerprint: Callable[[Path], None]
) -> None:
    """The helper above does not break a bundle by itself: the failures come from the edits."""
    bundle = tmp_path / "model"
    shutil.copytree(sample_bundle, bundle)
    refingerprint(bundle)
    assert _meta(bundle)["model_fingerprint"] == _meta(sample_bundle)["model_fingerprint"]
    out = tmp_path / "out" / "top.parquet"
    args = ["score", "--model", str(bundle), "--pairs", str(SAMPLE / "candidates.parquet")]
    result = CliRunner().invoke(batchrank_cli, [*args, "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert out.exists()
