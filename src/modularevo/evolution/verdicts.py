"""The decision rules of docs/evolution.md applied to a report, and its plain reading.

:func:`verdicts` applies the rules written before the benchmark ran (ModularEvo
against the best baseline chosen on validation, the learned module against its
random twin, and each variant against both); :func:`summary_lines` prints the last
round with intervals and a plain-language reading (``modularevo quickstart``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modularevo.evolution.report_stats import find_pair
from modularevo.evolution.report_tables import ci_text, last_round_rows, markdown_table


def verdicts(
    stats: dict[str, Any] | None,
    val_rows: list[dict[str, Any]],
    variants: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The decision rules of docs/evolution.md, applied to the last round (test, abs avg).

    * best baseline: the merging baseline (a registered ``ft_*`` strategy) with the
      highest *validation* absolute average in the last round;
    * ModularEvo wins only if the paired 95% interval of modularevo − best baseline
      lies above 0 (loses if below, else undecided);
    * the learned module matters only if the interval of modularevo − modularevo_random
      lies above 0;
    * each variant (``variants``: name -> parent strategy) is compared with the best
      baseline and with its parent; it wins a comparison only if the interval lies above
      0 *and* the Holm-adjusted p over the round's pairs is below 0.05, since several
      variants are tried.
    """
    out: dict[str, Any] = {}
    if stats is None or not val_rows:
        return out
    variants = dict(variants or {})
    last = max(r["round"] for r in val_rows)
    base_rows = [
        r
        for r in val_rows
        if r["round"] == last and r["strategy"].startswith("ft_") and r["strategy"] not in variants
    ]
    comparisons = []
    best = None
    if base_rows:
        best = max(base_rows, key=lambda r: r["abs_avg"])["strategy"]
        out["best_baseline_on_validation"] = best
        comparisons.append(("modularevo_vs_best_baseline", best))
    comparisons.append(("learned_module_vs_random", "modularevo_random"))
    for key, other in comparisons:
        found = _compare(stats, last, "modularevo", other, holm=False)
        if found is not None:
            out[key] = found
    for name, parent in variants.items():
        rules = {"vs_best_baseline": best, "vs_parent": parent}
        found_v = {
            key: _compare(stats, last, name, other, holm=True)
            for key, other in rules.items()
            if other is not None
        }
        found_v = {k: v for k, v in found_v.items() if v is not None}
        if found_v:
            out.setdefault("variants", {})[name] = {"parent": parent, **found_v}
    return out


def _compare(
    stats: dict[str, Any], rnd: int, a: str, b: str, *, holm: bool
) -> dict[str, Any] | None:
    """``a − b`` on test abs avg with the verdict of its rule (``None``: not both ran)."""
    pair = find_pair(stats, rnd, a, b)
    if pair is None:
        return None
    d = pair["abs_avg"]
    significant = not holm or d.get("p_holm", 1.0) < 0.05
    if d["lo"] > 0 and significant:
        verdict = "yes"
    elif d["hi"] < 0 and significant:
        verdict = "no (the other is better)"
    else:
        verdict = "undecided"
    return {"round": rnd, "a": a, "other": b, **d, "verdict": verdict}


def verdict_lines(v: dict[str, Any]) -> list[str]:
    """The verdicts as markdown bullets."""
    out = []
    if "best_baseline_on_validation" in v:
        out.append(
            f"* best baseline (validation abs avg, last round): {v['best_baseline_on_validation']}"
        )
    names = {
        "modularevo_vs_best_baseline": "ModularEvo beats the best baseline",
        "learned_module_vs_random": "the learned module matters (vs modularevo_random)",
    }
    for key, text in names.items():
        if key in v:
            out.append(_line(text, v[key]))
    for name, res in v.get("variants", {}).items():
        if "vs_best_baseline" in res:
            out.append(_line(f"variant {name} beats the best baseline", res["vs_best_baseline"]))
        if "vs_parent" in res:
            out.append(_line(f"variant {name} beats {res['parent']}", res["vs_parent"]))
    return out


def _line(text: str, d: dict[str, Any]) -> str:
    holm = f", Holm p {d['p_holm']:.3f}" if "p_holm" in d else ""
    return (
        f"* {text}: **{d['verdict']}** ({d['a']} − {d['other']}, test abs "
        f"avg: {d['diff']:+.2f} points [{d['lo']:+.2f}, {d['hi']:+.2f}]{holm})"
    )


def _reading_diff(d: dict[str, float]) -> str:
    ci = f"{d['diff']:+.1f} points [{d['lo']:+.1f}, {d['hi']:+.1f}]"
    if d["lo"] > 0:
        return f"{ci}: higher, the interval excludes 0"
    if d["hi"] < 0:
        return f"{ci}: lower, the interval excludes 0"
    return f"{ci}: inside the noise (the interval includes 0)"


def summary_lines(data: dict[str, Any]) -> list[str]:
    """The last round's figures with 95% intervals, then a plain-language reading.

    Args:
        data: the content of ``report.json``.
    """
    tasks = data["config"]["tasks"]
    rows = last_round_rows(data["table_test"])
    stats = data.get("stats")
    if not rows:
        return ["no completed round"]
    if stats is None:
        return [markdown_table(rows, tasks)]
    rnd = rows[0]["round"]
    by = {r["strategy"]: r for r in stats["rows"] if r["round"] == rnd}
    n = ", ".join(f"{t} {k}" for t, k in stats["n"].items())
    head = ["strategy", *tasks, "abs avg", "norm avg"]
    table = [head]
    for r in rows:
        s = by[r["strategy"]]
        cells = [r["strategy"], *(ci_text(s["tasks"][t]) for t in tasks), ci_text(s["abs_avg"])]
        table.append([*cells, ci_text(s.get("norm_avg"))])
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines = [f"round {rnd}, test accuracy % [95% interval]; test examples: {n}"]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in table]
    lines += ["", "Reading (absolute average over tasks; paired 95% intervals):"]
    names = [r["strategy"] for r in rows]
    if "base" in names:
        for name in names:
            if name != "base":
                pair = find_pair(stats, rnd, name, "base")
                if pair is not None:
                    lines.append(f"- {name} vs base: {_reading_diff(pair['abs_avg'])}")
    if "modularevo" in names:
        for other in names:
            if other.startswith("ft_") or other in ("single_task", "modularevo_random"):
                pair = find_pair(stats, rnd, "modularevo", other)
                if pair is not None:
                    lines.append(f"- modularevo vs {other}: {_reading_diff(pair['abs_avg'])}")
    for name, var in (data["config"].get("variants") or {}).items():
        pair = find_pair(stats, rnd, name, var["of"]) if name in names else None
        if pair is not None:
            lines.append(f"- {name} vs {var['of']}: {_reading_diff(pair['abs_avg'])}")
    half = max((d["hi"] - d["lo"]) / 2 for s in by.values() for d in s["tasks"].values())
    lines.append(
        f"- one task's accuracy here is uncertain by up to ±{half:.1f} points; a difference "
        "whose interval includes 0 is not evidence either way"
    )
    return lines
