"""Measuring inference cost: params, FLOPs, disk size, latency, throughput, memory."""

from modularevo.cost.meter import CostReport, Point, count_flops, count_params, measure_cost
from modularevo.cost.report import cost_json, cost_table, plot_cost

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
