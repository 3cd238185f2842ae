"""The run report: tables per round / task / strategy, search cost, plots, config, versions.

Scores are accuracies. The absolute average is the mean over tasks; the normalized
average is the mean over tasks of score ÷ the ``single_task`` score of the same
round and split, × 100 (METHODS.md §1.3 norm_avg, per round). Tables report test;
validation (what selection saw) is in the JSON.

Files written to ``<run>/report/``: ``report.md``, ``report.json``, ``rounds.png``
(normalized or absolute average per round and strategy) and ``module_overlap.png``
(Jaccard index between the domain modules).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from modularevo.evolution.config import EvolveConfig
from modularevo.evolution.state import RoundRecord, RunDir
from modularevo.utils.atomic import atomic_write_text

logger = logging.getLogger(__name__)


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
        if single is not None:
            ratios = [acc[t] / max(single.scores[t][split]["accuracy"], 1e-12) for t in tasks]
            row["norm_avg"] = 100 * sum(ratios) / len(ratios)
        else:
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


def _cost(records: list[RoundRecord]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for rec in records:
        c = out.setdefault(
            rec.strategy, {"search_evals": 0, "search_seconds": 0.0, "step_seconds": 0.0}
        )
        c["search_evals"] += (rec.search or {}).get("evaluations", 0)
        c["search_seconds"] += (rec.search or {}).get("seconds", 0.0)
        c["step_seconds"] += rec.seconds
        ft = sum(float(f.get("train_seconds") or 0) for f in rec.finetunes.values())
        c["finetune_seconds_seen"] = c.get("finetune_seconds_seen", 0.0) + ft
    return out


def write_report(run_root: str | Path, cfg: EvolveConfig) -> Path:
    """Write ``report/report.{md,json}`` and the plots; returns the markdown path."""
    run = RunDir(run_root)
    records = run.records()
    rows = table_rows(records, cfg.tasks)
    out = run.root / "report"
    out.mkdir(parents=True, exist_ok=True)
    overlap_path = run.root / "modules" / "overlap.json"
    overlap = json.loads(overlap_path.read_text("utf-8")) if overlap_path.is_file() else None
    info_path = run.root / "run_info.json"
    info = json.loads(info_path.read_text("utf-8")) if info_path.is_file() else {}
    plots = _plots(out, rows, overlap) if cfg.plots else []
    data = {
        "config": cfg.model_dump(mode="json"),
        "run_info": info,
        "table_test": rows,
        "table_validation": table_rows(records, cfg.tasks, "validation"),
        "cost": _cost(records),
        "module_overlap": overlap,
        "records": [r.to_json() for r in records],
        "plots": [p.name for p in plots],
    }
    atomic_write_text(out / "report.json", json.dumps(data, indent=1, default=str))
    md = _markdown(cfg, rows, data, plots)
    atomic_write_text(out / "report.md", md)
    return out / "report.md"


def last_round_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of the last round, best normalized (else absolute) average first."""
    if not rows:
        return []
    last = max(r["round"] for r in rows)
    chosen = [r for r in rows if r["round"] == last]
    return sorted(
        chosen, key=lambda r: -(r["norm_avg"] if r["norm_avg"] is not None else r["abs_avg"])
    )


def _markdown(
    cfg: EvolveConfig, rows: list[dict[str, Any]], data: dict[str, Any], plots: list[Path]
) -> str:
    parts = [
        f"# Evolution report: {cfg.model} on {', '.join(cfg.tasks)}",
        "",
        f"{cfg.rounds} round(s); accuracies on test in %; norm avg = mean of accuracy ÷ "
        "single_task accuracy of the same round × 100. λ/density chosen on validation only.",
        "",
        "## Last round",
        "",
        markdown_table(last_round_rows(rows), cfg.tasks),
        "",
        "## Every round",
        "",
        markdown_table(rows, cfg.tasks),
        "",
        "## Cost",
        "",
        "| strategy | search evaluations | search seconds | merge+eval seconds |",
        "|---|---|---|---|",
    ]
    for name, c in data["cost"].items():
        evals, secs = int(c["search_evals"]), c["search_seconds"]
        parts.append(f"| {name} | {evals} | {secs:.1f} | {c['step_seconds']:.1f} |")
    overlap = data["module_overlap"]
    if overlap:
        parts += [
            "",
            "## Modules",
            "",
            "| domain | density | " + " | ".join(overlap["jaccard"]) + " |",
        ]
        parts.append("|" + "---|" * (2 + len(overlap["jaccard"])))
        for a, row in overlap["jaccard"].items():
            cells = " | ".join(f"{v:.3f}" for v in row.values())
            parts.append(f"| {a} | {overlap['density'][a]:.3f} | {cells} |")
    parts += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    versions = data["run_info"].get("packages") or data["run_info"]
    parts += ["", "## Versions", "", "```", json.dumps(versions, indent=1, default=str), "```", ""]
    return "\n".join(parts)


def _plots(out: Path, rows: list[dict[str, Any]], overlap: dict[str, Any] | None) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        logger.warning("matplotlib missing; no plots")
        return []
    paths = []
    use_norm = any(r["norm_avg"] is not None for r in rows)
    key = "norm_avg" if use_norm else "abs_avg"
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in sorted({r["strategy"] for r in rows}):
        pts = sorted(
            (r["round"], r[key]) for r in rows if r["strategy"] == name and r[key] is not None
        )
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set_xticks(sorted({r["round"] for r in rows if r[key] is not None}))  # whole rounds
    ax.set_xlabel("round")
    ax.set_ylabel("normalized average (%)" if use_norm else "average accuracy (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "rounds.png", dpi=110)
    plt.close(fig)
    paths.append(out / "rounds.png")
    if overlap:
        names = list(overlap["jaccard"])
        fig, ax = plt.subplots(figsize=(4, 3.5))
        im = ax.imshow([[overlap["jaccard"][a][b] for b in names] for a in names], vmin=0, vmax=1)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_yticks(range(len(names)), names)
        fig.colorbar(im, ax=ax, label="Jaccard")
        fig.tight_layout()
        fig.savefig(out / "module_overlap.png", dpi=110)
        plt.close(fig)
        paths.append(out / "module_overlap.png")
    return paths
