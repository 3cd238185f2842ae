"""The report's pictures: accuracy per round with intervals, one panel per task.

``rounds.png``: one panel per task, the average and each retention probe, every
strategy's line starting at round 0 (the base); ``module_overlap.png``: the Jaccard
index between domain modules with its random expectation.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from modularevo.utils.plots import overlap_heatmap

logger = logging.getLogger(__name__)


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


def write_plots(
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
