"""What a modularization run's checkpoint holds, and resuming a run from it.

The file format (safe tensors-only load, RNG states, config check) is
:mod:`.modularize_checkpoint`; this module fills and reads it for a run.
"""

from __future__ import annotations

import json
import logging

from modularevo.training import modularize_checkpoint as ckpt
from modularevo.training.modularize_setup import ModularizeRun, make_optimizer

log = logging.getLogger(__name__)


def checkpoint_run(run: ModularizeRun) -> None:
    """Write ``checkpoint.pt``: config, step, history, scores, optimizer and RNG states."""
    if not run.acc.is_main_process:
        return
    state = {
        "config": run.cfg.model_dump(mode="json"), "step": run.step,
        "crossed": json.dumps(run.crossed), "history": json.dumps(run.history),
        "calibration": json.dumps(run.calibration),
        "share": [run.share_sum, run.share_n],
        "scores": run.scores.state_dict(), "opt": run.opt.state_dict(),
        "rng": ckpt.rng_state(),
    }  # fmt: skip
    ckpt.save_checkpoint(state, run.out / "checkpoint.pt")


def resume_run(run: ModularizeRun) -> bool:
    """Restore the run from ``checkpoint.pt``; False when there is none to resume."""
    state = ckpt.load_checkpoint(run.out / "checkpoint.pt", run.cfg.model_dump(mode="json"))
    if state is None:
        return False
    run.scores.load_state_dict(state["scores"])
    run.calibration = json.loads(state["calibration"])
    make_optimizer(run)
    run.opt.load_state_dict(state["opt"])
    run.step = int(state["step"])
    run.crossed, run.history = json.loads(state["crossed"]), json.loads(state["history"])
    run.share_sum, run.share_n = float(state["share"][0]), int(state["share"][1])
    ckpt.restore_rng(state["rng"])
    log.info("resumed from %s at step %d", run.out / "checkpoint.pt", run.step)
    return True
