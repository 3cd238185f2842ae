"""A fine-tuning run's state and setup: output folder, strategy, optimizer, resume.

:func:`prepare_output` refuses a finished folder (unless ``overwrite``) and clears stale
files; :func:`build_run` applies the strategy (``module``, ``lora`` or ``full``) and
builds the optimizer and the linear warm-up/decay schedule (:func:`linear_schedule`);
:func:`resume_or_start` picks up the latest checkpoint with its best weights
(:data:`BEST_FILE`). The loop is :func:`modularevo.training.finetune.finetune`.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import Tensor, nn

from modularevo.errors import InputError
from modularevo.training import strategies as st
from modularevo.training.finetune_config import FinetuneConfig
from modularevo.training.finetune_data import RunData
from modularevo.training.finetune_io import check_resumable, clear_run_files
from modularevo.training.loop import TrainState, load_checkpoint
from modularevo.training.recovery import wrap_for_training

logger = logging.getLogger(__name__)


BEST_FILE = "best.safetensors"


@dataclass
class FinetuneRun:
    """A fine-tuning run: config, prepared model and optimizer, data, module plan, output folder."""

    cfg: FinetuneConfig
    acc: Accelerator
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    data: RunData
    plan: st.TrainPlan | None
    out: Path
    total_steps: int
    base_masked: dict[str, Tensor]


def prepare_output(out: Path, cfg: FinetuneConfig, acc: Accelerator) -> None:
    """Refuse a finished folder unless ``overwrite``; clear stale results and checkpoints."""
    finished = (out / "metrics.json").is_file()
    if finished and not cfg.overwrite:
        raise InputError(
            f"output {str(out)!r} already holds a finished run (metrics.json); choose another "
            "output_dir or set overwrite=true"
        )
    if acc.is_main_process and ((finished and cfg.overwrite) or not cfg.resume):
        if finished:
            clear_run_files(out)  # the stale results go first: the folder must not look done
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
        (out / BEST_FILE).unlink(missing_ok=True)
    acc.wait_for_everyone()


def build_run(
    cfg: FinetuneConfig,
    acc: Accelerator,
    model: nn.Module,
    data: RunData,
    out: Path,
    *,
    teacher: nn.Module | None = None,
) -> FinetuneRun:
    """Apply the strategy to ``model`` and build the optimizer, schedule and run."""
    plan: st.TrainPlan | None = None
    base_masked: dict[str, Tensor] = {}
    if cfg.strategy == "module":
        assert cfg.module is not None
        masks = st.load_plan_masks(cfg.module, model, allow_modified=cfg.allow_modified_base)
        plan = st.apply_module_plan(model, masks)
        params = dict(model.named_parameters())
        base_masked = {n: params[n].detach().clone() for n in plan.masks}
    elif cfg.strategy == "lora":
        o = cfg.lora
        model = st.apply_lora(
            model, r=o.r, alpha=o.alpha, dropout=o.dropout, target_modules=o.target_modules
        )
    else:
        model.requires_grad_(True)
    optimizer = st.build_optimizer(
        model, plan, lr=cfg.lr, weight_decay=cfg.weight_decay, head_lr=cfg.head_lr
    )
    steps_per_epoch = len(data.train) // cfg.batch_size
    total = cfg.max_steps or max(1, int(cfg.epochs * steps_per_epoch))
    if cfg.warmup_steps >= total:
        logger.warning(
            "warmup_steps=%d >= the run's %d steps: the learning rate never decays; "
            "lower warmup_steps (e.g. %d, a tenth of the steps)",
            cfg.warmup_steps,
            total,
            max(1, total // 10),
        )
    model = wrap_for_training(model, optimizer, cfg, total_steps=total, teacher=teacher)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(cfg, total))
    model, optimizer = acc.prepare(model, optimizer)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("strategy %s: %d trainable parameters, %d steps", cfg.strategy, n_train, total)
    return FinetuneRun(cfg, acc, model, optimizer, scheduler, data, plan, out, total, base_masked)


def linear_schedule(cfg: FinetuneConfig, total: int) -> Callable[[int], float]:
    """Linear warm-up over ``warmup_steps`` to ``lr``, then linear decay to 0 at ``total``."""
    warm = cfg.warmup_steps

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total - step) / max(1, total - warm))

    return factor


def resume_or_start(run: FinetuneRun) -> TrainState:
    """The latest checkpoint's train state (its best weights restored), or a fresh one."""
    ckpt_root = run.out / "checkpoints"
    if run.acc.is_main_process:
        run.out.mkdir(parents=True, exist_ok=True)
    check_resumable(run.cfg, ckpt_root, run.acc.is_main_process)
    found = load_checkpoint(run.acc, ckpt_root, scheduler=run.scheduler) if run.cfg.resume else None
    if found is None:
        return TrainState()
    state, folder = found
    if run.acc.is_main_process:
        saved_best = folder / BEST_FILE
        if saved_best.is_file():
            shutil.copy2(saved_best, run.out / BEST_FILE)
        else:
            (run.out / BEST_FILE).unlink(missing_ok=True)
    run.acc.wait_for_everyone()
    return state
