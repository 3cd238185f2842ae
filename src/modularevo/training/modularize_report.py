"""What a modularization run reports: curves, tokens per level and ``modularize.json``."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from modularevo.modules.io import level_tag
from modularevo.training.modularize_setup import ModularizeRun
from modularevo.utils.atomic import atomic_write_text
from modularevo.utils.curves import Curves

TOKEN_LEVELS = (0.9, 0.75, 0.5, 0.25, 0.1)


def log_curves(curves: Curves, row: Mapping[str, Any]) -> None:
    """Train loss, validation loss (when evaluated) and the kept fraction of one step."""
    names = {"loss": "train/loss", "val_loss": "val/loss", "kept": "mask/kept_fraction"}
    curves.log({new: row.get(old) for old, new in names.items()}, int(row["step"]))


def tokens_per_level(history: Sequence[Mapping[str, float]]) -> dict[str, int | None]:
    """Tokens seen when the kept fraction first fell to each of :data:`TOKEN_LEVELS`."""
    out: dict[str, int | None] = {}
    for lv in TOKEN_LEVELS:
        hit = next((r for r in history if "kept" in r and r["kept"] <= lv and r["step"] > 0), None)
        out[level_tag(lv)] = int(hit["tokens"]) if hit else None
    return out


def write_summary(run: ModularizeRun, seconds: float) -> None:
    """Write ``modularize.json``: config, calibration, snapshots, tokens per level, history."""
    if not run.acc.is_main_process:
        return
    summary = {
        "config": run.cfg.model_dump(mode="json"),
        "run_seed": run.seed,
        "calibration": run.calibration,
        "head_warmup": run.head_report,
        "snapshots": run.crossed,
        "tokens_per_level": tokens_per_level(run.history),
        "steps_run": run.step,
        "seconds": seconds,
        "masked_tensors": len(run.scores.names()),
        "history": run.history,
    }
    atomic_write_text(run.out / "modularize.json", json.dumps(summary, indent=1))
