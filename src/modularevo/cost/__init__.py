"""Measuring inference cost: params, FLOPs, disk size, latency, throughput, memory."""

from __future__ import annotations

from typing import TYPE_CHECKING

from modularevo.utils.lazy import lazy_exports

if TYPE_CHECKING:
    from modularevo.cost.meter import CostReport, Point, count_flops, count_params, measure_cost
    from modularevo.cost.report import cost_json, cost_table, plot_cost

_EXPORTS = {
    "CostReport": "meter",
    "Point": "meter",
    "count_flops": "meter",
    "count_params": "meter",
    "measure_cost": "meter",
    "cost_json": "report",
    "cost_table": "report",
    "plot_cost": "report",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "CostReport",
    "Point",
    "cost_json",
    "cost_table",
    "count_flops",
    "count_params",
    "measure_cost",
    "plot_cost",
]
