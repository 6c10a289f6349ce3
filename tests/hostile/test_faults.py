"""Hostile: faults at every phase of a job — kill -9 and a full disk — never leave a wrong or
half-published export, and the next run produces the bytes of an uninterrupted one.

Faults are real: the run is a subprocess that SIGKILLs itself at a chosen call (the driver
patches one function to do it), or that runs under a file-size limit (RLIMIT_FSIZE, with SIGXFSZ
ignored, so writes past it fail with EFBIG as on a full disk).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest

from batchrank.storage import sha256_file

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"
DATE = "2025-01-31"

# Patch `module.attr` (a function or method) to SIGKILL the process on its `n`-th call.
DRIVER = textwrap.dedent(
    """
    import importlib, os, signal, sys
    target, n = sys.argv[1], int(sys.argv[2])
    if target != "-":
        mod_name, _, attr = target.rpartition(":")
        obj_path = attr.split(".")
        owner = importlib.import_module(mod_name)
        for part in obj_path[:-1]:
            owner = getattr(owner, part)
        original = getattr(owner, obj_path[-1])
        calls = [0]
        def killer(*a, **k):
            calls[0] += 1
            if calls[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(*a, **k)
        setattr(owner, obj_path[-1], killer)
    from batchrank.cli.main import main
    main(sys.argv[3:])
    """
)


def _job(tmp: Path, bundle: Path, top_k: int) -> Path:
    job = tmp / f"job-{top_k}.toml"
    job.write_text(
        textwrap.dedent(
            f"""
            [job]
            name = "faults"
            [score]
            model = "{bundle}"
            pairs = ["{SAMPLE / "candidates.parquet"}"]
            items = "{SAMPLE / "movies.parquet"}"
            top_k = {top_k}
            rejects = "exports/{{date}}/rejects.csv"
            out = "exports/{{date}}/top.parquet"
            """
        )
    )
    return job


def _run(job: Path, kill_at: str = "-", n: int = 1) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", DRIVER, kill_at, str(n), "run", str(job), "--date", DATE],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _run_here(job: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """An uninterrupted ``batchrank run JOB`` in this process (no kill: a subprocess would
    only add its start-up); its exit code and stderr."""
    from batchrank.cli.main import main

    try:
        main(["run", str(job), "--date", DATE])
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    return code, capsys.readouterr().err[-2000:]


def _assert_consistent(root: Path) -> None:
    """Whatever is certified matches its bytes; latest names a certified export."""
    folder = root / "exports" / DATE
    success = folder / "_SUCCESS"
    if success.exists():
        for f in json.loads(success.read_text())["files"]:
            assert sha256_file(folder / f["path"])[0] == f["sha256"], f["path"]
    manifest = folder / "top.parquet.manifest.json"
    if manifest.exists():
        digest = json.loads(manifest.read_text())["output"]["sha256"]
        assert sha256_file(folder / "top.parquet")[0] == digest
    latest = root / "exports" / "latest"
    if latest.exists():
        named = (latest.parent / latest.read_text().strip()).resolve()
        assert (named.parent / "_SUCCESS").exists()


PHASES = [
    ("batchrank.scoring.topk:TopK.add", 2),  # scoring
    ("batchrank.scoring.writers:OutputWriter.write", 1),  # writing the output
    ("batchrank.storage.local:_LocalStaged.commit", 2),  # output renamed, manifest not yet
    ("batchrank.storage.local:_LocalStaged.commit", 3),  # manifest renamed, _SUCCESS not yet
    ("batchrank.jobs.publish:update_latest", 1),  # all committed, latest not yet moved
]


@pytest.mark.slow
def test_kill_9_at_every_phase_keeps_the_export_consistent(
    sample_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # reference bytes of an uninterrupted run with top_k 5, in its own folder
    ref_root = tmp_path / "ref"
    ref_root.mkdir()
    assert _run_here(_job(ref_root, sample_bundle, 5), capsys)[0] == 0
    reference = (ref_root / "exports" / DATE / "top.parquet").read_bytes()
    ref_rejects = (ref_root / "exports" / DATE / "rejects.csv").read_bytes()
    # an earlier good export of the same date (top_k 10), copied before each faulty re-run
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    assert _run_here(_job(earlier, sample_bundle, 10), capsys)[0] == 0
    for target, n in PHASES:
        root = tmp_path / f"{target.rsplit(':', 1)[1]}-{n}"
        shutil.copytree(earlier, root, symlinks=True)
        killed = _run(_job(root, sample_bundle, 5), target, n)  # a real process, really killed
        assert killed.returncode == -9, (target, n, killed.stderr[-2000:])
        _assert_consistent(root)
        code, err = _run_here(_job(root, sample_bundle, 5), capsys)
        assert code == 0, (target, n, err)
        _assert_consistent(root)
        folder = root / "exports" / DATE
        assert (folder / "top.parquet").read_bytes() == reference, (target, n)
        assert (folder / "rejects.csv").read_bytes() == ref_rejects, (target, n)
        assert sorted(p.name for p in folder.iterdir()) == [
            "_SUCCESS",
            "rejects.csv",
            "top.parquet",
            "top.parquet.manifest.json",
        ], (target, n)


@pytest.fixture
def small_disk(tmp_path: Path):
    """A real 384 KiB file system (tmpfs): writes past it fail with ENOSPC, as on a full disk."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=384k", "tmpfs", str(mnt)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.slow
def test_full_disk_while_spilling_is_one_line_and_commits_nothing(
    sample_bundle: Path, tmp_path: Path, small_disk: Path
) -> None:
    from batchrank.bundle import load_bundle

    bundle = load_bundle(sample_bundle, model=False)
    users = bundle.users.ids.to_numpy()
    movies = bundle.items.ids.to_numpy()
    cross = pl.DataFrame(
        {"user_id": users.repeat(len(movies)), "movie_id": list(movies) * len(users)}
    )
    pairs = tmp_path / "pairs.parquet"
    pl.concat([cross.sample(fraction=1.0, shuffle=True, seed=s) for s in range(2)]).write_parquet(
        pairs
    )
    out = small_disk / "top.parquet"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "batchrank.cli.main",
            "score",
            "--model",
            str(sample_bundle),
            "--pairs",
            str(pairs),
            "--out",
            str(out),
            "--top-k",
            "50",
            "--memory-budget-mb",
            "0.05",
            "--chunk-rows",
            "30000",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 5, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("batchrank: error")]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert "no space left" in lines[0].lower(), lines[0]
    assert "Traceback" not in proc.stderr
    assert not out.exists()
    assert list(small_disk.iterdir()) == []
