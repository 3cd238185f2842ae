"""The statistics and reports of ``bench_merge_quality.py``: ``table.md`` and ``plot.png``.

Per number of tasks k (pooled over the subsets of size k): per-task accuracy, the absolute
average and the normalised average (accuracy ÷ the task's own fine-tune) with 95%
paired-bootstrap intervals stratified by (subset, task), and each method's difference from
task arithmetic on the same examples (interval and p-value). Controls: the individual
fine-tunes (the reference) and the untouched backbone with each task's fine-tuned head.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modularevo.evaluation.stats import bootstrap_averages, interval, paired_difference

TASKS = ("lang-id", "code-package", "legal-category", "math-type")
REFERENCE, CONTROL = "finetuned", "base_backbone"


def summarise(runs: list[dict[str, Any]], labels: Sequence[str]) -> dict[str, Any]:
    """Pooled over the subsets of one k: averages, intervals and differences from TA."""
    strata = [f"{'+'.join(r['tasks'])}|{t}" for r in runs for t in r["tasks"]]
    correct = {m: {f"{'+'.join(r['tasks'])}|{t}": r["test"][m][t]["correct"]
                   for r in runs for t in r["tasks"]} for m in labels}  # fmt: skip
    boot = bootstrap_averages(correct, strata, reference=REFERENCE, samples=2000, seed=0)
    rows = {}
    for m in labels:
        row = {
            "abs_avg": boot.estimate_abs[m], "abs_ci": interval(boot.abs_avg[m]),
            "norm_avg": boot.estimate_norm[m], "norm_ci": interval(boot.norm_avg[m]),
            "per_task": {t: float(np.mean([r["test"][m][t]["accuracy"] for r in runs
                                           if t in r["tasks"]])) for t in TASKS
                         if any(t in r["tasks"] for r in runs)},
        }  # fmt: skip
        if m not in (REFERENCE, CONTROL):
            row["seconds"] = float(np.mean([r["cost"][m]["seconds"] for r in runs]))
            row["peak_mib"] = float(np.max([r["cost"][m]["peak_mib"] for r in runs]))
        if m != "task_arithmetic" and "task_arithmetic" in labels:
            ta = "task_arithmetic"
            row["vs_ta_abs"] = paired_difference(
                boot.abs_avg[m], boot.abs_avg[ta], boot.estimate_abs[m] - boot.estimate_abs[ta]
            )
            row["vs_ta_norm"] = paired_difference(
                boot.norm_avg[m], boot.norm_avg[ta],
                boot.estimate_norm[m] - boot.estimate_norm[ta])  # fmt: skip
        rows[m] = row
    return {"subsets": [r["tasks"] for r in runs], "n_strata": len(strata), "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    """The tables of ``results.json`` as markdown."""
    lines = [f"Command: `{result['command']}`", ""]
    for k, s in result["by_k"].items():
        lines += [f"### {k} tasks ({len(s['subsets'])} subsets, test splits, 95% intervals)", "",
                  "| method | abs avg | norm avg | Δ norm vs TA [95% CI] (p) | merge s | "
                  "peak MiB | " + " | ".join(s["rows"][REFERENCE]["per_task"]) + " |",
                  "|---" * (6 + len(s["rows"][REFERENCE]["per_task"])) + "|"]  # fmt: skip
        order = sorted(s["rows"], key=lambda m: -s["rows"][m]["norm_avg"])
        for m in order:
            r = s["rows"][m]
            d = r.get("vs_ta_norm")
            diff = f"{d['diff']:+.2f} [{d['lo']:+.2f}, {d['hi']:+.2f}] ({d['p']:.3f})" if d else "–"
            cost = f"{r['seconds']:.2f} | {r['peak_mib']:.0f}" if "seconds" in r else "– | –"
            tasks = " | ".join(f"{100 * a:.1f}" for a in r["per_task"].values())
            lines.append(
                f"| {m} | {r['abs_avg']:.2f} [{r['abs_ci'][0]:.2f}, {r['abs_ci'][1]:.2f}] | "
                f"{r['norm_avg']:.2f} [{r['norm_ci'][0]:.2f}, {r['norm_ci'][1]:.2f}] | {diff} | "
                f"{cost} | {tasks} |"
            )
        lines.append("")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """Normalised average against the number of tasks, one line per method (95% CIs).

    The individual fine-tunes are the dashed line at 100; the untouched backbone (about
    50) is left out so that the methods' differences stay readable.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted(int(k) for k in result["by_k"])
    fig, ax = plt.subplots(figsize=(9, 5.5))
    labels = [m for m in dict.fromkeys(m for k in ks for m in result["by_k"][str(k)]["rows"])
              if m not in (REFERENCE, CONTROL)]  # fmt: skip
    colours = plt.get_cmap("tab20")  # 20 colours, called by index
    markers = "os^vDP*Xhp<>d8H"
    for i, m in enumerate(labels):
        have = [k for k in ks if m in result["by_k"][str(k)]["rows"]]
        rows = [result["by_k"][str(k)]["rows"][m] for k in have]
        y = [r["norm_avg"] for r in rows]
        err = [[r["norm_avg"] - r["norm_ci"][0] for r in rows],
               [r["norm_ci"][1] - r["norm_avg"] for r in rows]]  # fmt: skip
        x = [k + (i - len(labels) / 2) * 0.025 for k in have]
        ax.errorbar(x, y, yerr=err, marker=markers[i % len(markers)], capsize=2, label=m,
                    color=colours(i % 20), lw=2.2 if m == "task_arithmetic" else 1.2,
                    ls="--" if m == "task_arithmetic" else "-")  # fmt: skip
    ax.axhline(100, color="black", ls=":", lw=1, label="individual fine-tunes")
    ax.set_xticks(ks)
    ax.set_xlabel("number of merged tasks")
    ax.set_ylabel("normalised average accuracy (% of the individual fine-tunes)")
    ax.legend(fontsize=7, ncol=1, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
