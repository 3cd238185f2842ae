"""The report's tables: rows per (round, strategy), markdown tables, intervals as text.

Scores are accuracies. The absolute average is the mean over tasks; the normalized
average is the mean over tasks of score ÷ the ``single_task`` score of the same
round and split, × 100 (METHODS.md §1.3 norm_avg, per round).
"""

from __future__ import annotations

from typing import Any

from modularevo.evolution.state import RoundRecord


def table_rows(
    records: list[RoundRecord], tasks: list[str], split: str = "test"
) -> list[dict[str, Any]]:
    """One row per (round, strategy): per-task accuracy, absolute and normalized averages."""
    ref = {r.round: r for r in records if r.strategy == "single_task"}
    rows = []
    for rec in records:
        acc = {t: rec.scores[t][split]["accuracy"] for t in tasks if t in rec.scores}
        if len(acc) != len(tasks):
            continue
        row: dict[str, Any] = {"round": rec.round, "strategy": rec.strategy, **acc}
        row["abs_avg"] = 100 * sum(acc.values()) / len(acc)
        single = ref.get(rec.round)
        refs = [single.scores[t][split]["accuracy"] for t in tasks] if single else []
        if single is not None and min(refs) > 0:
            ratios = [acc[t] / r for t, r in zip(tasks, refs, strict=True)]
            row["norm_avg"] = 100 * sum(ratios) / len(ratios)
        else:  # no reference, or single_task scored 0 on a task: the ratio is undefined
            row["norm_avg"] = None
        search = rec.search or {}
        row["lambdas"] = search.get("lambdas")
        row["density"] = search.get("density")
        row["search_evals"] = search.get("evaluations", 0)
        row["search_seconds"] = search.get("seconds", 0.0)
        rows.append(row)
    return rows


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.2f}"
    if isinstance(v, list):
        return "/".join(f"{x:g}" for x in v)
    return str(v)


def markdown_table(rows: list[dict[str, Any]], tasks: list[str]) -> str:
    """A markdown table of ``rows`` (task accuracies in %)."""
    head = ["round", "strategy", *tasks, "abs avg", "norm avg", "λ", "density", "search evals"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r["round"]), r["strategy"], *(f"{100 * r[t]:.2f}" for t in tasks)]
        cells += [_fmt(r["abs_avg"]), _fmt(r["norm_avg"]), _fmt(r["lambdas"]), _fmt(r["density"])]
        cells.append(str(r["search_evals"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def last_round_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of the last round, best normalized (else absolute) average first."""
    if not rows:
        return []
    last = max(r["round"] for r in rows)
    chosen = [r for r in rows if r["round"] == last]
    return sorted(
        chosen, key=lambda r: -(r["norm_avg"] if r["norm_avg"] is not None else r["abs_avg"])
    )


def ci_text(d: dict[str, float] | None, scale: float = 1.0) -> str:
    if d is None:
        return "–"
    v = d.get("value", d.get("accuracy", d.get("diff")))
    assert v is not None
    return f"{scale * v:.2f} [{scale * d['lo']:.2f}, {scale * d['hi']:.2f}]"


def interval_table(stats: dict[str, Any], rows: list[dict[str, Any]], tasks: list[str]) -> str:
    """The last round's rows (order of ``rows``) with every figure's 95% interval."""
    by = {(r["round"], r["strategy"]): r for r in stats["rows"]}
    head = ["strategy", *tasks, "abs avg", "norm avg", "λ", "density"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        s = by.get((r["round"], r["strategy"]))
        if s is None:
            continue
        cells = [r["strategy"], *(ci_text(s["tasks"][t]) for t in tasks)]
        cells += [
            ci_text(s["abs_avg"]),
            ci_text(s.get("norm_avg")),
            _fmt(r["lambdas"]),
            _fmt(r["density"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pairs_table(stats: dict[str, Any], rnd: int, tasks: list[str]) -> str:
    """Paired differences a − b of round ``rnd`` with intervals and Holm-corrected p-values."""
    head = ["a − b", "Δ abs avg [95% CI]", "p Holm", "Δ norm avg [95% CI]", "p Holm"]
    head += [f"McNemar {t} (a only/b only, p Holm)" for t in tasks]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in stats["pairs"]:
        if p["round"] != rnd:
            continue
        norm = p.get("norm_avg")
        cells = [f"{p['a']} − {p['b']}", ci_text(p["abs_avg"]), f"{p['abs_avg']['p_holm']:.3f}"]
        cells += [ci_text(norm), f"{norm['p_holm']:.3f}" if norm else "–"]
        for t in tasks:
            m = p["mcnemar"][t]
            cells.append(f"{m['a_only']}/{m['b_only']}, {m['p_holm']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
