"""The benchmark's result: ratios, targets, the JSON object and the printed table."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

__all__ = ["TARGETS", "assemble", "ratios", "render_table", "targets"]

TARGETS = {
    "batchrank_over_naive": 3.0,
    "batchrank_over_ceiling_folded": 0.8,
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
    "batchrank_bf16": "batchrank score --precision bfloat16",
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
        "bf16_over_batchrank": _div(_get(variants, "batchrank_bf16", "pairs_per_s"), br),
        "bf16_over_batchrank_cpu": _div(br_cpu, _get(variants, "batchrank_bf16", "cpu_s")),
        "rss_batchrank_over_naive": _div(
            _get(variants, "batchrank", "peak_rss_bytes"), _get(variants, "naive", "peak_rss_bytes")
        ),
    }


def targets(variants: dict[str, Any], rat: dict[str, float | None]) -> list[dict[str, Any]]:
    """Each target of the issue this run can check: value, bound and whether it is met."""
    values = {
        "batchrank_over_naive": rat["batchrank_over_naive"],
        "batchrank_over_ceiling_folded": rat["batchrank_over_ceiling_folded"],
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


def _scenario_result(run: dict[str, Any]) -> dict[str, Any]:
    w = run["workload"]
    variants = run["variants"]
    rat = ratios(variants)
    return {
        "scenario": w.scenario,
        "description": w.describe(),
        "pairs": w.pairs,
        "catalogue": {"users": w.users, "movies": w.movies, "cross_join": w.users * w.movies},
        "candidates_per_user": w.candidates,
        "distinct_pairs": w.distinct_pairs,
        "model": {"path": str(run["model"])},
        "variants": variants,
        "ratios": rat,
        "targets": targets(variants, rat),
        "topk_agreement_naive_batchrank": run["topk_agreement"],
        "precision_agreement_bf16_fp32": run["precision_agreement"],
    }


def assemble(
    *,
    runs: list[dict[str, Any]],
    top_k: int,
    trained: bool,
    machine: dict[str, Any],
    started: dt.datetime,
    work_dir: Path | None,
) -> dict[str, Any]:
    """The benchmark's JSON object.

    The first scenario's figures are also at the top level (``pairs``, ``variants``,
    ``ratios``, ``targets``...); every scenario's are in ``scenarios``, in the order they ran.

    Args:
        runs: per scenario: ``workload``, ``variants`` (per-variant reports: ``pairs_per_s``,
            ``peak_rss_bytes``, ``wall_s``...), ``model``, ``topk_agreement`` and
            ``precision_agreement``.
        top_k: rows kept per user.
        trained: whether the benchmark trained the models.
        machine: machine facts.
        started: when the run started.
        work_dir: the kept work folder, if any.
    """
    scenarios = [_scenario_result(r) for r in runs]
    first = scenarios[0]
    return {
        "batchrank_bench": 2,
        "date": started.isoformat(timespec="seconds"),
        **first,
        "model": {**first["model"], "trained_by_bench": trained},
        "top_k": top_k,
        "machine": machine,
        "scenarios": scenarios,
        "work_dir": str(work_dir) if work_dir is not None else None,
    }


def _num(x: float | None, digits: int = 0) -> str:
    if x is None:
        return ""
    return f"{x:,.{digits}f}"


def _row(*cells: str, width: int = 6) -> str:
    """A Markdown table row of ``width`` cells (missing cells empty)."""
    padded = [*cells, *([""] * (width - len(cells)))]
    return "| " + " | ".join(padded) + " |"


def _ratio(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}×"


def _scenario_rows(sc: dict[str, Any]) -> list[str]:
    v = sc["variants"]
    rat = sc["ratios"]
    tag = sc["scenario"]
    lines = []
    for name, label in _LABELS.items():
        rep = v.get(name)
        if not rep:
            continue
        if "batch_size" in rep and name != "naive":
            label = f"{label}, batch {rep['batch_size']:,}"
        lines.append(
            _row(
                tag,
                label,
                _num(rep["pairs_per_s"]),
                _num(rep["peak_rss_mib"]),
                _num(rep["wall_s"], 1),
                _num(rep.get("cpu_s"), 1),
            )
        )
    for key, label in (
        ("batchrank_over_naive", "batchrank / naive"),
        ("batchrank_over_ceiling", "batchrank / ceiling (unfolded)"),
        ("batchrank_over_ceiling_folded", "batchrank / ceiling (folded)"),
        ("bf16_over_batchrank", "batchrank bfloat16 / float32"),
    ):
        if rat[key] is None:
            continue
        rss = _ratio(rat["rss_batchrank_over_naive"]) if key.endswith("naive") else ""
        wall, cpu = _ratio(rat[key]), _ratio(rat[f"{key}_cpu"])
        lines.append(_row(tag, label, wall, rss, "", cpu))
    st = v.get("startup")
    if st:
        runs = len(st["help_runs_s"])
        help_cpu = _num(st.get("help_cpu_s"), 2)
        lines.append(
            _row(
                "",
                f"`batchrank --help` (median of {runs})",
                "",
                "",
                f"{st['help_s']:.2f}",
                help_cpu,
            )
        )
        lines.append(
            _row(
                tag,
                f"`batchrank score`, {st['score_pairs']:,} pairs, cold",
                _num(st["pairs_per_s"]),
                _num(st["peak_rss_mib"]),
                f"{st['score_s']:.2f}",
                _num(st.get("cpu_s"), 2),
            )
        )
    return lines


def _scenario_notes(sc: dict[str, Any]) -> list[str]:
    v = sc["variants"]
    tag = sc["scenario"]
    lines = []
    for name in ("ceiling", "ceiling_folded"):
        rep = v.get(name)
        if rep:
            sweep = ", ".join(f"{r['batch_size']:,}: {r['pairs_per_s']:,.0f}" for r in rep["sweep"])
            on = f"{rep['sweep_pairs']:,} pairs"
            lines.append(f"{tag}: {_LABELS[name]} sweep, pairs/s by batch size on {on}: {sweep}")
    for t in sc["targets"]:
        op = "≥" if t["kind"] == "min" else "≤"
        mark = "met" if t["met"] else "NOT met"
        lines.append(f"{tag}: target {t['name']} {op} {t['bound']:g}: {t['value']:.2f} ({mark})")
    agreement = sc.get("topk_agreement_naive_batchrank")
    if agreement is not None:
        lines.append(f"{tag}: top-k agreement of naive and batchrank: {agreement:.1%}")
    pa_ = sc.get("precision_agreement_bf16_fp32")
    if pa_:
        delta = pa_["max_abs_delta_stars"]
        lines.append(
            f"{tag}: bfloat16 vs float32 on the same pairs: {pa_['identical_users']:.1%} of "
            f"{pa_['users']:,} users with an identical top-k list, mean overlap@k "
            f"{pa_['mean_overlap']:.1%}, max |Δ stars| "
            f"{'n/a' if delta is None else f'{delta:.4f}'}"
        )
    return lines


def render_table(result: dict[str, Any]) -> str:
    """The Markdown table ``batchrank bench`` prints (and the README shows)."""
    m = result["machine"]
    lines = [f"batchrank bench, top {result['top_k']}:"]
    lines += [f"- {sc['description']}" for sc in result["scenarios"]]
    lines += [
        f"machine: {m.get('cpu_count')} CPUs ({m.get('cpu_model')}), jax "
        f"{m.get('jax_backend', '?')} {m.get('jax_devices', '')}, load avg before "
        f"{_load(m.get('load_avg_before'))} after {_load(m.get('load_avg_after'))}; "
        f"{result['date']}",
        "",
        "| scenario | variant | pairs/s | peak RSS (MiB) | wall s | CPU s |",
        "|---|---|--:|--:|--:|--:|",
    ]
    for sc in result["scenarios"]:
        lines += _scenario_rows(sc)
    notes = [n for sc in result["scenarios"] for n in _scenario_notes(sc)]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def _load(values: list[float] | None) -> str:
    return "?" if not values else f"{values[0]:.1f}"
