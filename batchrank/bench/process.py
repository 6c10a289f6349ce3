"""Running one measured command: wall time, CPU time and peak RSS of that process alone.

Peak RSS comes from the OS's accounting of each command alone: a fresh launcher process per
command reaps it with ``os.wait4``, whose ``rusage`` covers that child (and its own waited-for
children) only, unlike ``getrusage(RUSAGE_CHILDREN)``, which is a maximum over every child
ever waited for.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ChildRun", "spawn", "tail"]


@dataclass(frozen=True)
class ChildRun:
    """One finished child process."""

    returncode: int
    wall_s: float
    """Wall time of the whole process (start-up and imports included)."""
    cpu_s: float | None
    """User + system CPU time of the whole process (None where the OS has no ``wait4``)."""
    peak_rss_bytes: int
    """The child's peak RSS from ``wait4`` (0 where the OS has no ``wait4``)."""
    stdout: str
    stderr: str


# A tiny launcher between the benchmark and each measured command. On Linux a child's peak RSS
# starts at its parent's RSS at fork time (the forked mm's high-water mark survives exec), so a
# command forked straight from this (large, JAX-importing) process would report at least this
# process's RSS. The launcher imports nothing, forks the command from a ~10 MiB process, reaps
# it with wait4 and writes "maxrss exit_code wall_s cpu_s" to the report file.
_LAUNCHER = """
import os, sys, time
report, argv = sys.argv[1], sys.argv[2:]
t0 = time.perf_counter()
pid = os.posix_spawnp(argv[0], argv, os.environ)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - t0
with open(report, "w") as f:
    cpu = usage.ru_utime + usage.ru_stime
    f.write(f"{usage.ru_maxrss} {os.waitstatus_to_exitcode(status)} {wall} {cpu}")
"""


def spawn(argv: Sequence[str], *, log_prefix: Path) -> ChildRun:
    """Run a command to completion; return its wall time and its own peak RSS.

    The command runs under a small launcher process (see ``_LAUNCHER``) that reaps it with
    ``os.wait4``, so its peak RSS is the OS's accounting of that command alone. Output goes to
    ``<log_prefix>.out`` / ``.err`` files (no pipe to deadlock on), read back at the end.

    Args:
        argv: the command (``argv[0]`` is looked up on ``PATH`` when it has no slash).
        log_prefix: path prefix of the log and report files.
    """
    out_path, err_path = log_prefix.with_suffix(".out"), log_prefix.with_suffix(".err")
    report = log_prefix.with_suffix(".rusage")
    report.unlink(missing_ok=True)
    posix = hasattr(os, "wait4") and hasattr(os, "posix_spawnp")
    cmd = [sys.executable, "-S", "-c", _LAUNCHER, str(report), *argv] if posix else list(argv)
    with out_path.open("wb") as out, err_path.open("wb") as err:
        t0 = time.perf_counter()
        # Its own session, so an interrupt can stop the launcher and the command together.
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, start_new_session=True)
        try:
            rc = proc.wait()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        wall = time.perf_counter() - t0
    rss, cpu = 0, None
    if posix and report.exists():
        maxrss, code, secs, cpu_s = report.read_text().split()
        rc, wall, cpu = int(code), float(secs), float(cpu_s)
        rss = int(maxrss) * (1 if sys.platform == "darwin" else 1024)
    return ChildRun(
        returncode=rc,
        wall_s=wall,
        cpu_s=cpu,
        peak_rss_bytes=rss,
        stdout=out_path.read_text(errors="replace"),
        stderr=err_path.read_text(errors="replace"),
    )


def tail(text: str, lines: int = 15) -> str:
    """The last ``lines`` lines of ``text``."""
    return "\n".join(text.strip().splitlines()[-lines:])
