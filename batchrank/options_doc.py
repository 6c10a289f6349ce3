"""The docs' option tables (``docs/options.md``), generated from declared options."""

from __future__ import annotations

from collections.abc import Sequence

from batchrank.options import Option

__all__ = ["options_table"]


def _default(opt: Option) -> str:
    if opt.required:
        return "required"
    return "" if opt.default is None or opt.default == () else f"`{opt.default}`"


def options_table(options: Sequence[Option]) -> str:
    """The Markdown page of the score options: a row per option a user can set."""
    lines = [
        "# Score options",
        "",
        "Generated from `ScoreSpec` (`batchrank/scoring/spec.py`) by",
        "`python -m batchrank.scoring.spec > docs/options.md`; a test fails when it is stale.",
        "Each is a `batchrank score` flag and a job file's `[score]` key (`--set score.KEY=V`",
        "overrides the key). `BATCHRANK_SCORE_KEY=V` in the environment sets an option that",
        "neither the command line nor `--set` gives, for `batchrank score` and job runs alike.",
        "Numbers may be given as numeric strings; values out of range are refused (exit 2).",
        "",
        "| job key | flag | value | default | meaning |",
        "|---|---|---|---|---|",
    ]
    for opt in options:
        if opt.scope == "run":
            continue
        key = {"all": f"`{opt.name}`", "table": f"`[table] {opt.job_key}`"}.get(
            opt.scope, "(job: managed)"
        )
        value = opt.expected.replace('"', "`")
        lines.append(f"| {key} | `{opt.flag}` | {value} | {_default(opt)} | {opt.doc} |")
    return "\n".join(lines) + "\n"
