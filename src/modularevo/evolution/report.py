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
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from modularevo.evaluation.stats import (
    CONFIDENCE,
    bootstrap_averages,
    holm,
    interval,
    mcnemar,
    paired_difference,
    wilson_interval,
)
from modularevo.evolution.config import EvolveConfig
from modularevo.evolution.state import RoundRecord, RunDir
from modularevo.utils.atomic import atomic_write_text
from modularevo.utils.plots import overlap_heatmap

logger = logging.getLogger(__name__)

BOOTSTRAP_SAMPLES = 2000


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
    plots = _plots(out, rows, stats, retention, cfg.tasks, overlap) if cfg.plots else []
    data = {
        "config": cfg.model_dump(mode="json"),
        "run_info": info,
        "table_test": rows,
        "table_validation": val_rows,
        "stats": stats,
        "verdicts": verdicts(stats, val_rows),
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


def _correct(scores: dict[str, Any], tasks: list[str], split: str) -> dict[str, np.ndarray] | None:
    out = {}
    for t in tasks:
        s = scores.get(t, {}).get(split, {})
        if "predictions" not in s:
            return None
        out[t] = np.asarray(s["predictions"]) == np.asarray(s["labels"])
    return out


def evolution_stats(
    records: list[RoundRecord],
    tasks: list[str],
    *,
    split: str = "test",
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> dict[str, Any] | None:
    """Intervals and paired tests of every round (``None`` when predictions are missing).

    Per row (round, strategy): n and the Wilson 95% interval of each task's accuracy, and
    the bootstrap 95% interval of the absolute and normalized averages. Per round and pair
    of strategies: the paired bootstrap (stratified by task) of the difference in absolute
    and normalized average, and McNemar per task; Holm-corrected within the round (one
    family per statistic: all pairs' abs avg tests, all pairs' norm avg tests, all pairs ×
    tasks McNemar tests).
    """
    by_round: dict[int, dict[str, dict[str, np.ndarray]]] = {}
    for rec in records:
        c = _correct(rec.scores, tasks, split)
        if c is None:
            return None
        by_round.setdefault(rec.round, {})[rec.strategy] = c
    if not by_round:
        return None
    first = next(iter(by_round.values()))
    n = {t: len(first[next(iter(first))][t]) for t in tasks}
    rows, pairs = [], []
    for rnd, correct in sorted(by_round.items()):
        ref = "single_task" if "single_task" in correct else None
        boot = bootstrap_averages(correct, tasks, reference=ref, samples=samples, seed=seed + rnd)
        for name, c in sorted(correct.items()):
            row: dict[str, Any] = {"round": rnd, "strategy": name, "tasks": {}}
            for t in tasks:
                k, m = int(c[t].sum()), len(c[t])
                lo, hi = wilson_interval(k, m)
                row["tasks"][t] = {"accuracy": 100 * k / m, "lo": 100 * lo, "hi": 100 * hi}
            row["abs_avg"] = _point(boot.estimate_abs[name], boot.abs_avg[name])
            if name in boot.norm_avg:
                row["norm_avg"] = _point(boot.estimate_norm[name], boot.norm_avg[name])
            rows.append(row)
        pairs += _round_pairs(rnd, correct, boot, tasks)
    return {
        "split": split,
        "confidence": CONFIDENCE,
        "bootstrap_samples": samples,
        "n": n,
        "rows": rows,
        "pairs": pairs,
    }


def _point(estimate: float, draws: np.ndarray) -> dict[str, float]:
    lo, hi = interval(draws)
    return {"value": estimate, "lo": lo, "hi": hi}


def _round_pairs(
    rnd: int, correct: dict[str, dict[str, np.ndarray]], boot: Any, tasks: list[str]
) -> list[dict[str, Any]]:
    names = sorted(correct)
    out: list[dict[str, Any]] = []
    for a, b in combinations(names, 2):
        pair: dict[str, Any] = {"round": rnd, "a": a, "b": b}
        pair["abs_avg"] = paired_difference(
            boot.abs_avg[a], boot.abs_avg[b], boot.estimate_abs[a] - boot.estimate_abs[b]
        )
        if a in boot.norm_avg:
            est = boot.estimate_norm[a] - boot.estimate_norm[b]
            pair["norm_avg"] = paired_difference(boot.norm_avg[a], boot.norm_avg[b], est)
        pair["mcnemar"] = {t: mcnemar(correct[a][t], correct[b][t]) for t in tasks}
        out.append(pair)
    for key in ("abs_avg", "norm_avg"):
        tested = [p for p in out if key in p]
        for p, adj in zip(tested, holm([p[key]["p"] for p in tested]), strict=True):
            p[key]["p_holm"] = adj
    tests = [p["mcnemar"][t] for p in out for t in tasks]
    for test, adj in zip(tests, holm([x["p"] for x in tests]), strict=True):
        test["p_holm"] = adj
    return out


def find_pair(stats: dict[str, Any], rnd: int, a: str, b: str) -> dict[str, Any] | None:
    """The comparison ``a − b`` of round ``rnd`` (signs flipped when stored as ``b − a``)."""
    for p in stats["pairs"]:
        if p["round"] != rnd:
            continue
        if (p["a"], p["b"]) == (a, b):
            return p
        if (p["a"], p["b"]) == (b, a):
            flip = {"round": rnd, "a": a, "b": b, "mcnemar": p["mcnemar"]}
            for key in ("abs_avg", "norm_avg"):
                if key in p:
                    d = p[key]
                    flip[key] = {**d, "diff": -d["diff"], "lo": -d["hi"], "hi": -d["lo"]}
            return flip
    return None


def verdicts(stats: dict[str, Any] | None, val_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The decision rules of docs/evolution.md, applied to the last round (test, abs avg).

    * best baseline: the merging baseline (``ft_*``) with the highest *validation*
      absolute average in the last round;
    * ModularEvo wins only if the paired 95% interval of modularevo − best baseline
      lies above 0 (loses if below, else undecided);
    * the learned module matters only if the interval of modularevo − modularevo_random
      lies above 0.
    """
    out: dict[str, Any] = {}
    if stats is None or not val_rows:
        return out
    last = max(r["round"] for r in val_rows)
    base_rows = [r for r in val_rows if r["round"] == last and r["strategy"].startswith("ft_")]
    comparisons = []
    if base_rows:
        best = max(base_rows, key=lambda r: r["abs_avg"])["strategy"]
        out["best_baseline_on_validation"] = best
        comparisons.append(("modularevo_vs_best_baseline", best))
    comparisons.append(("learned_module_vs_random", "modularevo_random"))
    for key, other in comparisons:
        pair = find_pair(stats, last, "modularevo", other)
        if pair is None:
            continue
        d = pair["abs_avg"]
        verdict = (
            "yes" if d["lo"] > 0 else "no (the other is better)" if d["hi"] < 0 else "undecided"
        )
        out[key] = {"round": last, "other": other, **d, "verdict": verdict}
    return out


def retention_rows(records: list[RoundRecord], *, seed: int = 0) -> list[dict[str, Any]]:
    """Per (strategy, round, retention task): test accuracy of the fixed round-0 probe head
    with its Wilson interval, and forgetting = round-0 accuracy − this accuracy (points) with
    a paired bootstrap interval over the same examples."""
    base0 = next((r for r in records if r.strategy == "base" and r.round == 0), None)
    if base0 is None or not base0.retention:
        return []
    out = []
    for rec in records:
        for task, splits in rec.retention.items():
            s, s0 = splits.get("test", {}), base0.retention[task].get("test", {})
            if "predictions" not in s or "predictions" not in s0:
                continue
            c = np.asarray(s["predictions"]) == np.asarray(s["labels"])
            c0 = np.asarray(s0["predictions"]) == np.asarray(s0["labels"])
            lo, hi = wilson_interval(int(c.sum()), len(c))
            boot = bootstrap_averages({"r0": {task: c0}, "r": {task: c}}, [task], seed=seed)
            diff = paired_difference(
                boot.abs_avg["r0"], boot.abs_avg["r"], 100 * (c0.mean() - c.mean())
            )
            out.append(
                {
                    "strategy": rec.strategy, "round": rec.round, "task": task, "n": len(c),
                    "accuracy": 100 * float(c.mean()), "lo": 100 * lo, "hi": 100 * hi,
                    "forgetting": diff["diff"], "forgetting_lo": diff["lo"],
                    "forgetting_hi": diff["hi"],
                }
            )  # fmt: skip
    return out


def last_round_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of the last round, best normalized (else absolute) average first."""
    if not rows:
        return []
    last = max(r["round"] for r in rows)
    chosen = [r for r in rows if r["round"] == last]
    return sorted(
        chosen, key=lambda r: -(r["norm_avg"] if r["norm_avg"] is not None else r["abs_avg"])
    )


def _ci(d: dict[str, float] | None, scale: float = 1.0) -> str:
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
        cells = [r["strategy"], *(_ci(s["tasks"][t]) for t in tasks)]
        cells += [_ci(s["abs_avg"]), _ci(s.get("norm_avg")), _fmt(r["lambdas"]), _fmt(r["density"])]
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
        cells = [f"{p['a']} − {p['b']}", _ci(p["abs_avg"]), f"{p['abs_avg']['p_holm']:.3f}"]
        cells += [_ci(norm), f"{norm['p_holm']:.3f}" if norm else "–"]
        for t in tasks:
            m = p["mcnemar"][t]
            cells.append(f"{m['a_only']}/{m['b_only']}, {m['p_holm']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _verdict_lines(v: dict[str, Any]) -> list[str]:
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
            d = v[key]
            out.append(
                f"* {text}: **{d['verdict']}** (modularevo − {d['other']}, test abs avg: "
                f"{d['diff']:+.2f} points [{d['lo']:+.2f}, {d['hi']:+.2f}])"
            )
    return out


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
                *_verdict_lines(data["verdicts"]),
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


def _series(
    rows: list[dict[str, Any]],
    stats: dict[str, Any] | None,
    tasks: list[str],
    retention: list[dict[str, Any]],
) -> dict[str, dict[str, list[tuple[int, float, float, float]]]]:
    """panel -> strategy -> [(round, value, lo, hi)]; round 0 (base) starts every line."""
    panels: dict[str, dict[str, list[tuple[int, float, float, float]]]] = {}
    if stats is not None:
        for r in stats["rows"]:
            for t in tasks:
                d = r["tasks"][t]
                panels.setdefault(t, {}).setdefault(r["strategy"], []).append(
                    (r["round"], d["accuracy"], d["lo"], d["hi"])
                )
            d = r["abs_avg"]
            panels.setdefault("average", {}).setdefault(r["strategy"], []).append(
                (r["round"], d["value"], d["lo"], d["hi"])
            )
    else:
        for r in rows:
            for t in tasks:
                v = 100 * r[t]
                panels.setdefault(t, {}).setdefault(r["strategy"], []).append((r["round"], v, v, v))
            v = r["abs_avg"]
            panels.setdefault("average", {}).setdefault(r["strategy"], []).append(
                (r["round"], v, v, v)
            )
    for r in retention:
        key = f"retention probe: {r['task']} (fixed round-0 head)"
        panels.setdefault(key, {}).setdefault(r["strategy"], []).append(
            (r["round"], r["accuracy"], r["lo"], r["hi"])
        )
    for lines in panels.values():  # every strategy starts from round 0's base
        start = [p for p in lines.get("base", []) if p[0] == 0]
        for name, pts in lines.items():
            if name != "base" and start and not any(p[0] == 0 for p in pts):
                pts.insert(0, start[0])
            pts.sort()
    return panels


def _plots(
    out: Path,
    rows: list[dict[str, Any]],
    stats: dict[str, Any] | None,
    retention: list[dict[str, Any]],
    tasks: list[str],
    overlap: dict[str, Any] | None,
) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        logger.warning("matplotlib missing; no plots")
        return []
    paths = []
    panels = _series(rows, stats, tasks, retention)
    names = sorted({n for lines in panels.values() for n in lines})
    cols = min(3, len(panels))
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.4 * nrows), squeeze=False)
    colors = {n: plt.get_cmap("tab10")(i % 10) for i, n in enumerate(names)}
    # more strategies than colours: the merges of full fine-tunes are dashed, every
    # strategy has its own marker, and ModularEvo is drawn thicker
    markers = {n: "osD^vPX*h<>p"[i % 12] for i, n in enumerate(names)}
    for ax, (title, lines) in zip(axes.flat, panels.items(), strict=False):
        for i, name in enumerate(names):
            pts = lines.get(name)
            if not pts:
                continue
            shift = (i - (len(names) - 1) / 2) * 0.04  # side by side, so the bars stay visible
            x = [p[0] + shift for p in pts]
            y = [p[1] for p in pts]
            own = [name == "base" or p[0] > 0 for p in pts]  # round 0's bar drawn once, on base
            err = [
                [p[1] - p[2] if o else 0.0 for p, o in zip(pts, own, strict=True)],
                [p[3] - p[1] if o else 0.0 for p, o in zip(pts, own, strict=True)],
            ]
            ax.errorbar(
                x, y, yerr=err, marker=markers[name], ms=4, capsize=2, color=colors[name],
                lw=2 if name == "modularevo" else 1, label=name,
                ls="--" if name.startswith("ft_") else "-",
            )  # fmt: skip
        rounds = sorted({p[0] for pts in lines.values() for p in pts})
        ax.set_xticks(rounds)
        ax.set_title(title if title != "average" else "average over tasks", fontsize=9)
        ax.set_xlabel("round")
        ax.set_ylabel("test accuracy (%)")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=7)
    fig.suptitle(
        "test accuracy per round, 95% intervals (tasks: Wilson; average: bootstrap)", fontsize=9
    )
    fig.tight_layout(rect=(0, 0.08, 1, 0.96))
    fig.savefig(out / "rounds.png", dpi=110)
    plt.close(fig)
    paths.append(out / "rounds.png")
    if overlap and "density" in overlap:  # values and the random expectation in the cells
        doms = list(overlap["jaccard"])
        paths.append(overlap_heatmap(doms, overlap["jaccard"], overlap["density"],
                                     out / "module_overlap.png"))  # fmt: skip
    return paths


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
        cells = [r["strategy"], *(_ci(s["tasks"][t]) for t in tasks), _ci(s["abs_avg"])]
        table.append([*cells, _ci(s.get("norm_avg"))])
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
    half = max((d["hi"] - d["lo"]) / 2 for s in by.values() for d in s["tasks"].values())
    lines.append(
        f"- one task's accuracy here is uncertain by up to ±{half:.1f} points; a difference "
        "whose interval includes 0 is not evidence either way"
    )
    return lines
