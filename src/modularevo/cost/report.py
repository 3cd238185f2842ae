"""Cost reports: a rich table, a latency plot and JSON, dense vs module side by side."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from modularevo.cost.meter import CostReport


def cost_table(reports: Sequence[CostReport], *, baseline: str | None = None) -> Table:
    """One row per (model, batch, seq_len); speed-up relative to ``baseline`` (first model)."""
    base = next((r for r in reports if r.name == baseline), reports[0]) if reports else None
    t = Table(title="inference cost (CPU)")
    for col in ("model", "params", "non-zero", "disk MB", "batch", "seq", "GFLOPs",
                "latency ms", "seq/s", "peak MB", "speed-up"):  # fmt: skip
        t.add_column(col, justify="left" if col == "model" else "right")
    for r in reports:
        disk = f"{r.disk_bytes / 2**20:.1f}" if r.disk_bytes is not None else "-"
        for p in r.points:
            ref = base.point(p.batch, p.seq_len) if base else p
            lat = f"{p.latency_ms:.1f} ± {p.latency_iqr_ms:.1f}"
            speed = f"{ref.latency_ms / p.latency_ms:.2f}x"
            t.add_row(
                r.name, f"{r.params:,}", f"{r.nonzero_params:,}", disk, str(p.batch),
                str(p.seq_len), f"{p.flops / 1e9:.2f}", lat, f"{p.throughput:.1f}",
                f"{p.peak_mem_mb:.0f}", speed,
            )  # fmt: skip
    return t


def cost_json(reports: Sequence[CostReport], extra: dict[str, Any] | None = None) -> str:
    """JSON text of all reports (plus ``extra`` facts such as the CPU and threads)."""
    return json.dumps({**(extra or {}), "models": [r.to_dict() for r in reports]}, indent=2)


def plot_cost(reports: Sequence[CostReport], path: str | Path) -> Path:
    """Latency vs batch size, one line per (model, seq_len), log-log; saved to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in reports:
        for s in sorted({p.seq_len for p in r.points}):
            pts = sorted((p.batch, p.latency_ms) for p in r.points if p.seq_len == s)
            ax.plot(
                [b for b, _ in pts], [ms for _, ms in pts], marker="o", label=f"{r.name}, seq {s}"
            )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("median latency (ms)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
