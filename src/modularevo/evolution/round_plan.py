"""Which fine-tunes a round needs: each strategy's start, modules and shared jobs.

:class:`EvolveContext` is what a running evolution holds; :func:`plan_jobs` maps
(strategy, task) to a :class:`~modularevo.evolution.jobs.FinetuneJob`, one job per
equal (start, task, kind).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from modularevo.evolution.config import EvolveConfig
from modularevo.evolution.evaluate import TaskEvaluator
from modularevo.evolution.jobs import FinetuneJob
from modularevo.evolution.prepare import ensure_random_twins, modules_at_density
from modularevo.evolution.runner import JobRunner, Workspace
from modularevo.evolution.state import STATE_FILE, RunDir
from modularevo.evolution.strategies import Strategy


@dataclass
class EvolveContext:
    """What a running evolution holds: config, workspace, evaluators, run folder, modules."""

    cfg: EvolveConfig
    ws: Workspace
    ev: TaskEvaluator
    run: RunDir
    modules: dict[str, str]
    runner: JobRunner
    bar: Any
    module_sets: dict[tuple[float | None, bool], dict[str, str]] = field(default_factory=dict)
    retention: TaskEvaluator | None = None
    retention_heads: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)


def round_start(ctx: EvolveContext, strategy: str, rnd: int) -> tuple[str, Path]:
    """The model strategy ``strategy`` starts round ``rnd`` from: (its name, its state file)."""
    if rnd == 1:
        return "base", ctx.run.round_dir("base", 0) / STATE_FILE
    return strategy, ctx.run.round_dir(strategy, rnd - 1) / STATE_FILE


def module_set(ctx: EvolveContext, s: Strategy) -> dict[str, str]:
    """Task -> the module file strategy ``s`` fine-tunes in and merges with (made once)."""
    if s.train != "module":
        return {}
    key = (s.module_density, s.random_mask)
    if key not in ctx.module_sets:
        cfg, run = ctx.cfg, ctx.run
        d = s.module_density
        learned = ctx.modules if d is None else modules_at_density(cfg, run, ctx.modules, d)
        chosen = ensure_random_twins(cfg, run, learned, density=d) if s.random_mask else learned
        ctx.module_sets[key] = chosen
    return ctx.module_sets[key]


def plan_jobs(
    ctx: EvolveContext, rnd: int, strategies: list[str]
) -> dict[tuple[str, str], FinetuneJob]:
    """(strategy, task) -> job for round ``rnd``; equal keys share one job.

    A variant that fine-tunes like its parent (only its merge differs) shares the
    parent's round-1 fine-tunes; one with its own learning rate or module density has
    its own jobs.
    """
    by_key: dict[str, FinetuneJob] = {}
    out: dict[tuple[str, str], FinetuneJob] = {}
    for name in strategies:
        s = ctx.cfg.strategy(name)
        if s.train is None:
            continue
        start, path = round_start(ctx, name, rnd)
        kind = f"{s.train}-random" if s.random_mask else s.train
        if s.trains_own:
            kind = f"{kind}-{name}"
        modules = module_set(ctx, s)
        for task in ctx.cfg.tasks:
            key = f"{start}-{task}-{kind}"
            if key not in by_key:
                module = modules.get(task) if s.train == "module" else None
                out_dir = str(ctx.run.finetune_dir(rnd, key))
                job = FinetuneJob(key, rnd, task, s.train, str(path), module, out_dir, s.lr)
                by_key[key] = job
            out[(name, task)] = by_key[key]
    return out


def pending_user(ctx: EvolveContext, rnd: int, key: str) -> bool:
    """Whether a strategy still to run in round ``rnd`` needs the fine-tune ``key``."""
    left = [s for s in ctx.cfg.strategies if not ctx.run.has_round(s, rnd)]
    return any(j.key == key for j in plan_jobs(ctx, rnd, left).values())
