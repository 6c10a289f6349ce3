"""The benchmark's result: ratios, targets, the JSON object and the printed table."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from batchrank.bench.data import N_MOVIES, N_USERS

__all__ = ["TARGETS", "assemble", "ratios", "render_table", "targets"]

TARGETS = {
    "batchrank_over_naive": 3.0,
    "batchrank_over_ceiling": 0.8,
    "batchrank_peak_rss_mib": 1024.0,
    "help_s": 1.0,
    "score_1000_s": 5.0,
}
"""The issue's targets: ratios are minimums, RSS and seconds are maximums."""

_LABELS = {
    "ceiling": "ceiling (unfolded, in memory)",
    "ceiling_folded": "ceiling (folded, in memory)",
    "naive": "naive (polars + model.predict)",
    "batchrank": "batchrank score",
    "batchrank_no_table": "batchrank score --score-table never",
}


def _get(variants: dict[str, Any], name: str, key: str) -> float | None:
    rep = variants.get(name)
    if not rep or rep.get(key) is None:
        return None
    return float(rep[key])


def _div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def ratios(variants: dict[str, Any]) -> dict[str, float | None]:
    """batchrank against naive and the ceilings, in pairs/s and in peak RSS."""
    br = _get(variants, "batchrank", "pairs_per_s")
    br_cpu = _get(variants, "batchrank", "cpu_s")
    return {
        "batchrank_over_naive": _div(br, _get(variants, "naive", "pairs_per_s")),
        "batchrank_over_ceiling": _div(br, _get(variants, "ceiling", "pairs_per_s")),
        "batchrank_over_ceiling_folded": _div(br, _get(variants, "ceiling_folded", "pairs_per_s")),
        # Pairs per CPU-second, the same ratios with CPU time instead of wall time: less
        # sensitive to other work on a shared machine (all variants score the same pairs).
        "batchrank_over_naive_cpu": _div(_get(variants, "naive", "cpu_s"), br_cpu),
        "batchrank_over_ceiling_cpu": _div(_get(variants, "ceiling", "cpu_s"), br_cpu),
        "batchrank_over_ceiling_folded_cpu": _div(
            _get(variants, "ceiling_folded", "cpu_s"), br_cpu
        ),
        "rss_batchrank_over_naive": _div(
            _get(variants, "batchrank", "peak_rss_bytes"), _get(variants, "naive", "peak_rss_bytes")
        ),
    }


def targets(variants: dict[str, Any], rat: dict[str, float | None]) -> list[dict[str, Any]]:
    """Each target of the issue this run can check: value, bound and whether it is met."""
    values = {
        "batchrank_over_naive": rat["batchrank_over_naive"],
        "batchrank_over_ceiling": rat["batchrank_over_ceiling"],
        "batchrank_peak_rss_mib": _get(variants, "batchrank", "peak_rss_mib"),
        "help_s": _get(variants, "startup", "help_s"),
        "score_1000_s": _get(variants, "startup", "score_s"),
    }
    out = []
    for name, bound in TARGETS.items():
        value = values[name]
        if value is None:
            continue
        is_min = name.startswith("batchrank_over")
        out.append(
            {
                "name": name,
                "value": value,
                "bound": bound,
                "kind": "min" if is_min else "max",
                "met": value >= bound if is_min else value <= bound,
            }
        )
    return out


def assemble(
    *,
    variants: dict[str, Any],
    pairs: int,
    top_k: int,
    model: Path,
    trained: bool,
    machine: dict[str, Any],
    started: dt.datetime,
    work_dir: Path | None,
    topk_agreement: float | None,
) -> dict[str, Any]:
    """The benchmark's JSON object.

    Args:
        variants: per-variant reports (``pairs_per_s``, ``peak_rss_bytes``, ``wall_s``...).
        pairs: pairs in the input.
        top_k: rows kept per user.
        model: the bundle benchmarked.
        trained: whether the benchmark trained it.
        machine: machine facts.
        started: when the run started.
        work_dir: the kept work folder, if any.
        topk_agreement: share of batchrank's top-k rows also in naive's.
    """
    rat = ratios(variants)
    return {
        "batchrank_bench": 1,
        "date": started.isoformat(timespec="seconds"),
        "pairs": pairs,
        "catalogue": {"users": N_USERS, "movies": N_MOVIES, "cross_join": N_USERS * N_MOVIES},
        "distinct_pairs": min(pairs, N_USERS * N_MOVIES),
        "top_k": top_k,
        "model": {"path": str(model), "trained_by_bench": trained},
        "machine": machine,
        "variants": variants,
        "ratios": rat,
        "targets": targets(variants, rat),
        "topk_agreement_naive_batchrank": topk_agreement,
        "work_dir": str(work_dir) if work_dir is not None else None,
    }


def _num(x: float | None, digits: int = 0) -> str:
    if x is None:
        return ""
    return f"{x:,.{digits}f}"


def _row(*cells: str, width: int = 5) -> str:
    """A Markdown table row of ``width`` cells (missing cells empty)."""
    padded = [*cells, *([""] * (width - len(cells)))]
    return "| " + " | ".join(padded) + " |"


def _ratio(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}×"


def render_table(result: dict[str, Any]) -> str:
    """The Markdown table ``batchrank bench`` prints (and the README shows)."""
    v = result["variants"]
    m = result["machine"]
    rat = result["ratios"]
    lines = [
        f"batchrank bench: {result['pairs']:,} pairs over {N_USERS} users × {N_MOVIES:,} movies, "
        f"top {result['top_k']}",
        f"machine: {m.get('cpu_count')} CPUs ({m.get('cpu_model')}), jax "
        f"{m.get('jax_backend', '?')} {m.get('jax_devices', '')}, load avg before "
        f"{_load(m.get('load_avg_before'))} after {_load(m.get('load_avg_after'))}; "
        f"{result['date']}",
        "",
        "| variant | pairs/s | peak RSS (MiB) | wall s | CPU s |",
        "|---|--:|--:|--:|--:|",
    ]
    for name, label in _LABELS.items():
        rep = v.get(name)
        if not rep:
            continue
        if "batch_size" in rep and name != "naive":
            label = f"{label}, batch {rep['batch_size']:,}"
        lines.append(
            _row(
                label,
                _num(rep["pairs_per_s"]),
                _num(rep["peak_rss_mib"]),
                _num(rep["wall_s"], 1),
                _num(rep.get("cpu_s"), 1),
            )
        )
    for key, label in (
        ("naive", "batchrank / naive"),
        ("ceiling", "batchrank / ceiling (unfolded)"),
        ("ceiling_folded", "batchrank / ceiling (folded)"),
    ):
        if rat[f"batchrank_over_{key}"] is None:
            continue
        rss = _ratio(rat["rss_batchrank_over_naive"]) if key == "naive" else ""
        wall, cpu = _ratio(rat[f"batchrank_over_{key}"]), _ratio(rat[f"batchrank_over_{key}_cpu"])
        lines.append(_row(label, wall, rss, "", cpu))
    st = v.get("startup")
    if st:
        runs = len(st["help_runs_s"])
        help_cpu = _num(st.get("help_cpu_s"), 2)
        lines.append(
            _row(f"`batchrank --help` (median of {runs})", "", "", f"{st['help_s']:.2f}", help_cpu)
        )
        lines.append(
            _row(
                f"`batchrank score`, {st['score_pairs']:,} pairs, cold",
                _num(st["pairs_per_s"]),
                _num(st["peak_rss_mib"]),
                f"{st['score_s']:.2f}",
                _num(st.get("cpu_s"), 2),
            )
        )
    if "ceiling" in v or "ceiling_folded" in v:
        lines.append("")
    for name in ("ceiling", "ceiling_folded"):
        rep = v.get(name)
        if rep:
            sweep = ", ".join(f"{r['batch_size']:,}: {r['pairs_per_s']:,.0f}" for r in rep["sweep"])
            on = f"{rep['sweep_pairs']:,} pairs"
            lines.append(f"{_LABELS[name]} sweep, pairs/s by batch size on {on}: {sweep}")
    if result["targets"]:
        lines.append("")
        for t in result["targets"]:
            op = "≥" if t["kind"] == "min" else "≤"
            mark = "met" if t["met"] else "NOT met"
            lines.append(f"target {t['name']} {op} {t['bound']:g}: {t['value']:.2f} ({mark})")
    agreement = result.get("topk_agreement_naive_batchrank")
    if agreement is not None:
        lines.append(f"top-k agreement of naive and batchrank: {agreement:.1%}")
    return "\n".join(lines)


def _load(values: list[float] | None) -> str:
    return "?" if not values else f"{values[0]:.1f}"
