"""The modules a modularization run writes: one hard mask per snapshot level crossed.

:func:`snapshot` writes ``module-<level>.safetensors`` (a :class:`ModuleMask` with the
base's fingerprints, built by :func:`build_module`) when :func:`hard_kept` first falls
to the level.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from modularevo.modules.io import level_tag, save_module
from modularevo.modules.mask import ModuleMask, fingerprint
from modularevo.training import head_warmup
from modularevo.training.modularize_setup import ModularizeRun

log = logging.getLogger(__name__)


def build_module(
    masks: Mapping[str, Tensor], model: nn.Module, *, domain: str, metadata: Mapping[str, Any]
) -> ModuleMask:
    """A :class:`ModuleMask` with fingerprints of the masked base parameters."""
    params = dict(model.named_parameters())
    covered = [(n, params[n]) for n in masks]
    return ModuleMask(
        masks=dict(masks),
        domain=domain,
        arch_fingerprint=fingerprint(covered, values=False),
        base_fingerprint=fingerprint(covered),
        metadata=dict(metadata),
    )


def hard_kept(run: ModularizeRun) -> float:
    """Kept fraction of the hard masks over all covered entries."""
    masks = run.scores.hard_masks()
    kept = sum(int(m.sum()) for m in masks.values())
    return kept / max(sum(m.numel() for m in masks.values()), 1)


def snapshot(run: ModularizeRun, level: float, kept: float, val_loss: float) -> Path:
    """Write the hard mask as ``module-<level>.safetensors`` and record the crossing."""
    tag = level_tag(level)
    tokens = run.step * run.cfg.batch_size * run.cfg.max_length
    info = {"level": level, "step": run.step, "kept": kept, "val_loss": val_loss,
            "tokens": tokens}  # fmt: skip
    meta: dict[str, Any] = {
        **info, "kind": run.cfg.kind, "model": run.cfg.model, "structured": run.cfg.structured,
        "seed": run.cfg.seed, "run_seed": run.seed, "calibration": run.calibration,
        "head": head_warmup.HEAD_FILE if "path" in run.head_report else None,
        "config": run.cfg.model_dump(mode="json"),
    }  # fmt: skip
    if run.cfg.structured:
        units = run.scores.unit_masks()
        meta["units"] = {
            u: "".join("1" if b else "0" for b in m.tolist()) for u, m in units.items()
        }
    module = build_module(run.scores.hard_masks(), run.model, domain=run.cfg.dataset,
                          metadata=meta)  # fmt: skip
    path = save_module(module, run.out / f"module-{tag}.safetensors")
    run.crossed[tag] = {**info, "path": str(path)}
    log.info("kept %.4f <= %.2f at step %d (%d tokens): wrote %s", kept, level, run.step,
             tokens, path)  # fmt: skip
    return path
