"""What a planned merge will do, for ``modularevo merge --dry-run``: sizes and memory."""

from __future__ import annotations

from typing import Any

from modularevo.errors import ConfigError
from modularevo.merging.plan_types import CHUNK, MergePlan


def memory_estimate(plan: MergePlan) -> int:
    """A rough upper bound of the merge's working memory in bytes (excluding Python/torch).

    The K+1 inputs of the largest tensor are held (read into fresh buffers);
    whole-tensor methods add about 2K+3 float32 temporaries of it, chunked ones
    (elementwise methods, per-tensor TIES) a few chunks. The writer queue holds up
    to two output tensors, one more is being written.
    """
    merged = plan.merge_tasks()
    if not plan.tasks:
        return 0
    k = len(plan.models)
    largest = max(plan.tasks, key=lambda t: t.numel)
    out_bytes = largest.numel * largest.out_info.itemsize * 3
    if not merged:
        return out_bytes
    big = max(merged, key=lambda t: t.numel).numel
    try:
        chunked = plan.chunk_mode(plan.params_for(None)) is not None
    except ConfigError:
        chunked = False
    inputs = (k + 1) * big * 4
    work = (2 * k + 4) * min(big, CHUNK) * 4 if chunked else big * 4 * (2 * k + 3)
    return inputs + work + out_bytes


def summary(plan: MergePlan) -> dict[str, Any]:
    """What the merge will do, for ``--dry-run``: counts, sizes, parameters, memory."""
    by_action: dict[str, int] = {}
    out_bytes = 0
    for t in plan.tasks:
        by_action[t.action] = by_action.get(t.action, 0) + 1
        out_bytes += t.numel * t.out_info.itemsize
    try:
        params: Any = plan.params_for(None)
    except ConfigError:
        params = "per-tensor rules (see the recipe)"
    return {
        "method": plan.method.name,
        "backend": plan.backend.name,
        "paper": plan.method.paper,
        "base_model": plan.config.base_model,
        "models": [e.model for e in plan.entries],
        "tensors": by_action,
        "parameters_total": sum(t.numel for t in plan.tasks),
        "output_bytes": out_bytes,
        "global_threshold_prepass": plan.needs_thresholds(),
        "memory_estimate_bytes": memory_estimate(plan),
        "params": params,
        "notes": list(plan.notes),
    }
