"""Step 5 of ``bench_deploy_sparse.py``: ``results.md`` and ``plot.png`` from the task records.

The table gives accuracy (with intervals) and, per engine and batch, the dense and sparse
latency with the speed-up; the plot puts the accuracy difference against the speed-up.
matplotlib is imported inside :func:`plot` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sparse_timing import ENGINES


def sparsity_tag(sparsity: float) -> str:
    """The short name of a target sparsity in file names and labels: 0.75 -> ``s75``."""
    return f"s{round(100 * sparsity)}"


def _pm(x: dict) -> str:
    return f"{x['acc']:.2f} [{x['lo']:.1f}, {x['hi']:.1f}]"


def table(records: Sequence[dict], batches: Sequence[int] = (1, 8)) -> str:
    """Markdown: accuracy (with intervals) and DeepSparse / ONNX Runtime latency per record."""
    lines = [
        "| task | sparsity (encoder Linears) | steps | n | dense acc % [95% CI] "
        "| sparse acc % [95% CI] | sparse − dense [95% CI] | McNemar p |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        a, d = r["accuracy"], r["accuracy"]["diff"]
        lines.append(
            f"| {r['task']} | {r['module']['encoder_linear_sparsity']:.3f} | {r['steps']} "
            f"| {a['n']} | {_pm(a['dense'])} | {_pm(a['sparse'])} "
            f"| {d['diff']:+.2f} [{d['lo']:+.2f}, {d['hi']:+.2f}] | {a['mcnemar']['p']:.3g} |"
        )
    lines += ["", "| task | sparsity | engine | batch | dense ms (IQR) | sparse ms (IQR) "
              "| speed-up [95% CI] |", "|---|---:|---|---:|---:|---:|---:|"]  # fmt: skip
    for r in records:
        t = r.get("timing") or {}
        for b in batches:
            pt = t.get(f"batch{b}") or {}
            for eng in ENGINES:
                if f"{eng}/speedup" not in pt:
                    continue
                d, s, sp = pt[f"{eng}/dense"], pt[f"{eng}/sparse"], pt[f"{eng}/speedup"]
                lines.append(
                    f"| {r['task']} | {r['sparsity_target']:.2f} | {eng} | {b} "
                    f"| {d['median_ms']:.1f} ({d['iqr_ms']:.1f}) "
                    f"| {s['median_ms']:.1f} ({s['iqr_ms']:.1f}) "
                    f"| {sp['ratio']:.2f}× [{sp['lo']:.2f}, {sp['hi']:.2f}] |"
                )
    return "\n".join(lines) + "\n"


def plot(records: Sequence[dict], path: Path, batch: int = 8) -> None:
    """Accuracy difference (with its interval) vs speed-up at ``batch``, per engine."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for eng, colour in (("deepsparse", "tab:blue"), ("ort", "tab:grey")):
        for r in records:
            sp = ((r.get("timing") or {}).get(f"batch{batch}") or {}).get(f"{eng}/speedup")
            if sp is None:
                continue
            d = r["accuracy"]["diff"]
            ax.errorbar(sp["ratio"], d["diff"], yerr=[[d["diff"] - d["lo"]], [d["hi"] - d["diff"]]],
                        xerr=[[sp["ratio"] - sp["lo"]], [sp["hi"] - sp["ratio"]]], fmt="o",
                        color=colour, capsize=3)  # fmt: skip
            label = f"{r['task']} {sparsity_tag(r['sparsity_target'])}"
            ax.annotate(label, (sp["ratio"], d["diff"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=7, color=colour)  # fmt: skip
        ax.plot([], [], "o", color=colour, label=f"{eng} (sparse vs dense, same engine)")
    ax.axhline(0, color="black", lw=0.5)
    ax.axhline(-1, color="tab:red", lw=0.5, ls="--", label="−1 point")
    ax.axvline(1, color="black", lw=0.5)
    ax.axvline(2.5, color="tab:green", lw=0.5, ls="--", label="2.5× (issue 16 target)")
    ax.set_xlabel(f"speed-up at batch {batch}, 1 thread (median dense / median sparse)")
    ax.set_ylabel("test accuracy, sparse − dense (points, 95% CI)")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
