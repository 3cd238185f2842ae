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
    if stats is not None and retention:
        trade = tradeoff_plot(out / "tradeoff.png", stats, retention)
        if trade is not None:
            paths.append(trade)
    if overlap and "density" in overlap:  # values and the random expectation in the cells
        doms = list(overlap["jaccard"])
        paths.append(overlap_heatmap(doms, overlap["jaccard"], overlap["density"],
                                     out / "module_overlap.png"))  # fmt: skip
    return paths


def tradeoff_points(
    stats: dict[str, Any], retention: list[dict[str, Any]]
) -> dict[str, dict[str, tuple[float, float, float]]]:
    """Last round, per merging strategy: test abs avg and mean forgetting, (value, lo, hi).

    Forgetting is averaged over the retention probes; its interval is the widest
    probe's interval shifted to the mean (conservative, as the probes are not pooled).
    """
    last = max(r["round"] for r in stats["rows"])
    acc = {r["strategy"]: r["abs_avg"] for r in stats["rows"] if r["round"] == last}
    by: dict[str, list[dict[str, Any]]] = {}
    for r in retention:
        if r["round"] == last and r["strategy"] in acc:
            by.setdefault(r["strategy"], []).append(r)
    out: dict[str, dict[str, tuple[float, float, float]]] = {}
    for name, rs in by.items():
        mean = sum(r["forgetting"] for r in rs) / len(rs)
        half = max((r["forgetting_hi"] - r["forgetting_lo"]) / 2 for r in rs)
        a = acc[name]
        out[name] = {
            "accuracy": (a["value"], a["lo"], a["hi"]),
            "forgetting": (mean, mean - half, mean + half),
        }
    return out


def tradeoff_plot(
    path: Path, stats: dict[str, Any], retention: list[dict[str, Any]]
) -> Path | None:
    """``tradeoff.png``: last-round accuracy on the trained tasks against forgetting on the
    retention probes, one point per strategy with both intervals (``None``: nothing to draw)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = tradeoff_points(stats, retention)
    if len(pts) < 2:
        return None
    fig, ax = plt.subplots(figsize=(8.4, 4.8))
    for i, (name, p) in enumerate(sorted(pts.items())):
        (fx, flo, fhi), (ay, alo, ahi) = p["forgetting"], p["accuracy"]
        own = name.startswith("modularevo")
        ax.errorbar(
            fx, ay, xerr=[[fx - flo], [fhi - fx]], yerr=[[ay - alo], [ahi - ay]],
            marker="osD^vPX*h<>p"[i % 12], ms=6 if own else 4, capsize=2, lw=0.8,
            color=plt.get_cmap("tab20")(i % 20), label=name, ls="none",
        )  # fmt: skip
    ax.set_xlabel("forgetting on the retention probes (points, mean over probes; lower is better)")
    ax.set_ylabel("test abs avg on the trained tasks (%)")
    last = max(r["round"] for r in stats["rows"])
    ax.set_title(f"round {last}: accuracy against forgetting, 95% intervals", fontsize=9)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
