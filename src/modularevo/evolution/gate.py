"""The gate of an evolution run: single_task must beat base before the main phase."""

from __future__ import annotations

import logging

from modularevo.errors import InputError
from modularevo.evolution.state import RunDir

logger = logging.getLogger(__name__)


class GateError(InputError):
    """single_task did not beat base by ``gate_min_gain`` points on every task."""


def check_gate(run: RunDir, tasks: list[str], min_gain: float) -> dict[str, float]:
    """Validation gain (points) of round-1 single_task over base per task; stop if too small.

    The gain is read from the records, on validation (selection data, never test), and
    logged; the run stops unless every task gains at least ``min_gain`` points.

    Raises:
        GateError: a task gains less than ``min_gain`` points.
    """
    base, single = run.read_record("base", 0), run.read_record("single_task", 1)
    val = "validation"
    gains = {
        t: 100 * (single.scores[t][val]["accuracy"] - base.scores[t][val]["accuracy"])
        for t in tasks
    }
    text = ", ".join(f"{t} {g:+.1f}" for t, g in gains.items())
    short = [t for t, g in gains.items() if g < min_gain]
    run.write_json("gate.json", {"min_gain": min_gain, "gain_points": gains, "passed": not short})
    if short:
        raise GateError(
            f"gate failed: single_task must beat base by >= {min_gain:g} points on every task's "
            f"validation after round 1, got {text}; the main phase was not run. Fine-tuning "
            f"does not learn {short} at this budget: raise finetune.max_steps or finetune.lr, "
            "or choose other tasks"
        )
    logger.info("gate passed (>= %g points on validation): %s", min_gain, text)
    return gains
