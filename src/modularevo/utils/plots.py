"""Pictures a researcher can read: values in the cells, baselines drawn, spreads shown.

Pure drawing functions on plain numbers (matplotlib, Agg backend, loaded on first use):

* :func:`plot_curves`: training curves, loss on the left, validation metrics on the right.
* :func:`overlap_heatmap`: pairwise Jaccard of module masks with each value and the
  random expectation of two independent masks of the same densities
  (:func:`random_jaccard`) written in the cells.
* :func:`density_grid`: kept fraction per (layer, matrix), one panel per module.
* :func:`cost_panels`: latency with its spread (IQR) per model and shape, and the
  speed-up over the baseline model.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_LAYER = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.(.+)$")

_SHORT = (
    ("attention.self.", "attn."),
    ("attention.output.dense", "attn.out"),
    ("self_attn.", "attn."),
    ("intermediate.dense", "ffn.in"),
    ("output.dense", "ffn.out"),
    ("mlp.", "mlp."),
    (".weight", ""),
)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def random_jaccard(a: float, b: float) -> float:
    """Expected Jaccard of two independent random masks of densities ``a`` and ``b``.

    Each entry is kept by both with probability ``ab`` and by either with ``a + b - ab``.
    """
    union = a + b - a * b
    return a * b / union if union > 0 else 1.0


def plot_curves(
    records: Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    title: str = "training curves",
    xlabel: str = "step",
) -> Path:
    """Loss curves (left) and validation metrics (right) over steps; saved to ``path``.

    Args:
        records: ``{"step": s, name: value, ...}`` rows; names containing ``loss`` go to
            the left panel, every other name to the right one.
        path: the PNG to write.
        title: the figure's title.
    """
    plt = _pyplot()
    series: dict[str, list[tuple[int, float]]] = {}
    for row in records:
        for k, v in row.items():
            if k != "step" and isinstance(v, (int, float)):
                series.setdefault(k, []).append((int(row["step"]), float(v)))
    losses = {k: v for k, v in series.items() if "loss" in k}
    metrics = {k: v for k, v in series.items() if "loss" not in k}
    kinds = {"val": "validation metric", "mask": "kept fraction", "train": "train metric"}
    right = " / ".join(dict.fromkeys(kinds.get(k.split("/")[0], "metric") for k in metrics))
    panels = [("loss", losses), (right, metrics)]
    panels = [(name, s) for name, s in panels if s] or [("value", series)]
    width = max(6.5, 5.2 * len(panels))
    fig, axes = plt.subplots(1, len(panels), figsize=(width, 4.4), squeeze=False)
    steps = sorted({int(r["step"]) for r in records})
    for ax, (label, group) in zip(axes[0], panels, strict=True):
        for name, pts in sorted(group.items()):
            pts.sort()
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            many = len(pts) > 40
            ax.plot(xs, ys, marker=None if many else "o", markersize=3, lw=1.2 if many else 1.5,
                    label=f"{name} (last {ys[-1]:.4g})")  # fmt: skip
        ax.set(xlabel=xlabel, ylabel=label)
        if len(steps) <= 12:  # few points (rounds, epochs): whole-number ticks
            ax.set_xticks(steps)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2,
                  frameon=False)  # fmt: skip
    fig.suptitle("\n".join(textwrap.wrap(title, width=int(width * 12))), fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def overlap_heatmap(
    names: Sequence[str],
    jaccard: Mapping[str, Mapping[str, float]],
    densities: Mapping[str, float],
    path: str | Path,
) -> Path:
    """Pairwise Jaccard heatmap; each cell shows the value and the random expectation.

    Args:
        names: the modules, in display order.
        jaccard: ``jaccard[a][b]`` for ``a != b``.
        densities: each module's kept fraction (for :func:`random_jaccard`).
        path: the PNG to write.
    """
    plt = _pyplot()
    n = len(names)
    grid = [[1.0 if a == b else float(jaccard[a][b]) for b in names] for a in names]
    fig, ax = plt.subplots(figsize=(1.35 * n + 3, 1.1 * n + 1.8))
    im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis")
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            v = grid[i][j]
            color = "black" if v > 0.6 else "white"
            if a == b:
                ax.text(j, i, f"d={densities[a]:.2f}", ha="center", va="center", fontsize=7,
                        color=color)  # fmt: skip
                continue
            rnd = random_jaccard(densities[a], densities[b])
            ax.text(j, i, f"{v:.2f}\nrandom {rnd:.2f}", ha="center", va="center", fontsize=7,
                    color=color)  # fmt: skip
    ax.set_xticks(range(n), list(names), rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(n), list(names), fontsize=8)
    ax.set_title(
        "mask overlap (Jaccard); 'random': two independent masks of the same\n"
        "densities a, b expect ab/(a+b-ab); diagonal: density d",
        fontsize=8,
    )
    fig.colorbar(im, ax=ax, label="Jaccard", fraction=0.046, pad=0.04)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def layer_and_matrix(name: str) -> tuple[int | None, str]:
    """``(layer index, short matrix name)`` of a parameter name; layer ``None`` outside layers.

    >>> layer_and_matrix("bert.encoder.layer.3.attention.self.query.weight")
    (3, 'attn.query')
    """
    m = _LAYER.search(name)
    rest = m.group(2) if m else name.split(".", 1)[-1] if name.count(".") > 1 else name
    for old, new in _SHORT:
        rest = rest.replace(old, new)
    return (int(m.group(1)) if m else None), rest


def density_grid(per_module: Mapping[str, Mapping[str, float]], path: str | Path) -> Path:
    """Kept fraction per (layer, matrix), one annotated panel per module.

    Args:
        per_module: ``{module: {parameter name: kept fraction}}``.
        path: the PNG to write.
    """
    plt = _pyplot()
    labels = list(per_module)
    cells: dict[str, dict[tuple[str, str], float]] = {}
    rows: list[str] = []
    cols: list[str] = []
    for label in labels:
        cells[label] = {}
        for name, d in per_module[label].items():
            layer, matrix = layer_and_matrix(name)
            row = f"layer {layer}" if layer is not None else "other"
            if row not in rows:
                rows.append(row)
            if matrix not in cols:
                cols.append(matrix)
            cells[label][(row, matrix)] = float(d)
    rows.sort(key=lambda r: (r == "other", int(r.split()[1]) if r != "other" else 0))
    fig, axes = plt.subplots(
        1, len(labels), figsize=(max(4.5, 0.75 * len(cols) + 2.2) * len(labels),
                                 0.42 * len(rows) + 2.2), squeeze=False)  # fmt: skip
    im = None
    # one colour scale for every panel, from 0 to the largest cell (a 0-1 scale would
    # paint a 0.25 module's 0.17-0.40 spread in one shade)
    top = max((v for c in cells.values() for v in c.values()), default=1.0)
    vmax = min(1.0, max(0.05, math.ceil(top * 20) / 20))
    for ax, label in zip(axes[0], labels, strict=True):
        grid = [[cells[label].get((r, c), float("nan")) for c in cols] for r in rows]
        im = ax.imshow(grid, vmin=0, vmax=vmax, cmap="magma", aspect="auto")
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                if v == v:  # not NaN
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                            color="black" if v > 0.55 * vmax else "white")  # fmt: skip
        ax.set_xticks(range(len(cols)), cols, rotation=40, ha="right", fontsize=7)
        ax.set_yticks(range(len(rows)), rows, fontsize=7)
        ax.set_title(f"{label}: kept fraction", fontsize=9)
    if im is not None:
        fig.colorbar(im, ax=list(axes[0]), label="kept fraction", fraction=0.03, pad=0.02)
    path = Path(path)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def cost_panels(rows: Sequence[Mapping[str, Any]], path: str | Path, *, baseline: str) -> Path:
    """Latency bars with IQR spread (left) and speed-up over ``baseline`` (right).

    Args:
        rows: ``{"model", "batch", "seq_len", "latency_ms", "latency_iqr_ms"}`` per point.
        path: the PNG to write.
        baseline: the model the speed-up is relative to.
    """
    plt = _pyplot()
    models = list(dict.fromkeys(str(r["model"]) for r in rows))
    shapes = sorted({(int(r["batch"]), int(r["seq_len"])) for r in rows})
    at = {(str(r["model"]), int(r["batch"]), int(r["seq_len"])): r for r in rows}
    width = 0.8 / max(len(models), 1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(8.0, 1.5 * len(shapes) + 5), 3.8))
    xs = range(len(shapes))
    for k, m in enumerate(models):
        pts = [at.get((m, b, s)) for b, s in shapes]
        lat = [p["latency_ms"] if p else float("nan") for p in pts]
        err = [p["latency_iqr_ms"] / 2 if p else 0.0 for p in pts]
        pos = [x - 0.4 + width * (k + 0.5) for x in xs]
        left.bar(pos, lat, width, yerr=err, capsize=3, label=m)
        if m == baseline:
            continue
        speed = []
        for (b, s), p in zip(shapes, pts, strict=True):
            ref = at.get((baseline, b, s))
            speed.append(ref["latency_ms"] / p["latency_ms"] if p and ref else float("nan"))
        right.plot(list(xs), speed, marker="o", label=m)
        for x, v in zip(xs, speed, strict=True):
            if v == v:
                right.annotate(f"{v:.2f}x", (x, v), textcoords="offset points", xytext=(0, 5),
                               ha="center", fontsize=7)  # fmt: skip
    ticks = [f"b{b}×s{s}" for b, s in shapes]
    left.set_xticks(list(xs), ticks, fontsize=8)
    left.set(ylabel="median latency (ms)", title="latency (bars: ± half the IQR)")
    left.legend(fontsize=7)
    left.grid(axis="y", alpha=0.3)
    right.axhline(1.0, color="grey", lw=1, ls="--", label=f"{baseline} (1x)")
    right.set_xticks(list(xs), ticks, fontsize=8)
    right.set(ylabel=f"speed-up over {baseline}", title="speed-up (median / median)")
    right.legend(fontsize=7)
    right.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
