"""Cost reports: a rich table, a latency plot and JSON, dense vs module side by side."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from modularevo.cost.meter import CostReport
from modularevo.utils.plots import cost_panels


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


def plot_cost(
    reports: Sequence[CostReport], path: str | Path, *, baseline: str | None = None
) -> Path:
    """Latency per (batch, seq_len) with its IQR spread, and the speed-up over ``baseline``.

    ``baseline`` defaults to the first model (the dense one in ``modularevo cost``).
    """
    rows = [
        {"model": r.name, "batch": p.batch, "seq_len": p.seq_len, "latency_ms": p.latency_ms,
         "latency_iqr_ms": p.latency_iqr_ms}
        for r in reports
        for p in r.points
    ]  # fmt: skip
    ref = baseline if baseline is not None else (reports[0].name if reports else "")
    return cost_panels(rows, path, baseline=ref)
