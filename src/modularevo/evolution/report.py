"""The run report: tables per round / task / strategy, statistics, verdicts, cost, plots.

Tables report test; validation (what selection saw) is in the JSON. Files written to
``<run>/report/``: ``report.md``, ``report.json``, ``rounds.png`` (accuracy per round
with intervals) and ``module_overlap.png`` (Jaccard index between the domain modules).
The parts live beside this file: tables (:mod:`.report_tables`), statistics
(:mod:`.report_stats`), decision rules (:mod:`.verdicts`), pictures (:mod:`.report_plots`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from modularevo.evolution.config import EvolveConfig
from modularevo.evolution.report_plots import write_plots
from modularevo.evolution.report_stats import evolution_stats, retention_rows
from modularevo.evolution.report_tables import (
    interval_table,
    last_round_rows,
    markdown_table,
    pairs_table,
    table_rows,
)
from modularevo.evolution.state import RoundRecord, RunDir
from modularevo.evolution.verdicts import verdict_lines, verdicts
from modularevo.utils.atomic import atomic_write_text


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
    gate_path = run.root / "gate.json"
    stats = evolution_stats(records, cfg.tasks, seed=cfg.seed)
    val_rows = table_rows(records, cfg.tasks, "validation")
    retention = retention_rows(records, seed=cfg.seed)
    plots = write_plots(out, rows, stats, retention, cfg.tasks, overlap) if cfg.plots else []
    data = {
        "config": cfg.model_dump(mode="json"),
        "run_info": info,
        "table_test": rows,
        "table_validation": val_rows,
        "stats": stats,
        "verdicts": verdicts(stats, val_rows, {k: v.of for k, v in cfg.variants.items()}),
        "retention": retention,
        "gate": json.loads(gate_path.read_text("utf-8")) if gate_path.is_file() else None,
        "cost": _cost(records),
        "module_overlap": overlap,
        "records": [_slim(r.to_json()) for r in records],
        "plots": [p.name for p in plots],
    }
    atomic_write_text(out / "report.json", json.dumps(data, indent=1, default=str))
    md = _markdown(cfg, rows, data, plots)
    atomic_write_text(out / "report.md", md)
    return out / "report.md"


def _slim(record: dict[str, Any]) -> dict[str, Any]:
    """A record without its per-example lists (they stay in the run's record.json files)."""
    drop = ("predictions", "labels")
    for part in ("scores", "retention"):
        for splits in record.get(part, {}).values():
            for score in splits.values():
                for k in drop:
                    score.pop(k, None)
    return record


def _markdown(
    cfg: EvolveConfig, rows: list[dict[str, Any]], data: dict[str, Any], plots: list[Path]
) -> str:
    stats = data["stats"]
    last = last_round_rows(rows)
    parts = [
        f"# Evolution report: {cfg.model} on {', '.join(cfg.tasks)}",
        "",
        f"{cfg.rounds} round(s); accuracies on test in %; norm avg = mean of accuracy ÷ "
        "single_task accuracy of the same round × 100. λ/density chosen on validation only.",
        "",
    ]
    if data["gate"]:
        g = data["gate"]
        gains = ", ".join(f"{t} {v:+.1f}" for t, v in g["gain_points"].items())
        state = "passed" if g["passed"] else "FAILED"
        parts += [f"**Gate {state}** (single_task − base after round 1, validation, ≥ "
                  f"{g['min_gain']:g} points on every task): {gains}.", ""]  # fmt: skip
    if stats is not None and last:
        n = ", ".join(f"{t} {k}" for t, k in stats["n"].items())
        parts += [
            "## Last round, with 95% intervals",
            "",
            f"Test examples per task: {n}. Task columns: accuracy [Wilson 95% interval]; "
            f"averages: [paired bootstrap 95% interval, {stats['bootstrap_samples']} draws "
            "stratified by task].",
            "",
            interval_table(stats, last, cfg.tasks),
            "",
        ]
        if data["verdicts"]:
            parts += [
                "## Decision rules (docs/evolution.md)",
                "",
                *verdict_lines(data["verdicts"]),
                "",
            ]
        parts += [
            "## Paired comparisons, last round",
            "",
            "Δ = a − b in points; p: two-sided bootstrap p (averages) and exact McNemar p per "
            "task, Holm-corrected over the round's pairs.",
            "",
            pairs_table(stats, last[0]["round"], cfg.tasks),
            "",
        ]
    else:
        parts += ["## Last round", "", markdown_table(last, cfg.tasks), ""]
    if data["retention"]:
        parts += [
            "## Forgetting (retention probe: fixed round-0 head on each backbone)",
            "",
            "| strategy | round | task | accuracy [95% CI] | forgetting (points) [95% CI] |",
            "|---|---|---|---|---|",
        ]
        for r in data["retention"]:
            acc = f"{r['accuracy']:.2f} [{r['lo']:.2f}, {r['hi']:.2f}]"
            fg = f"{r['forgetting']:+.2f} [{r['forgetting_lo']:+.2f}, {r['forgetting_hi']:+.2f}]"
            parts.append(f"| {r['strategy']} | {r['round']} | {r['task']} | {acc} | {fg} |")
        parts.append("")
    parts += [
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
