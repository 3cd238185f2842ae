"""One strategy's round from its fine-tunes: keep them, or merge them, then score.

A merging strategy merges the fine-tuned backbones into its current backbone with λ
(and density) searched on validation (:func:`~modularevo.evolution.search.search_merge`);
each task keeps its own head, and retention tasks are scored with their round-0 heads.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from modularevo.evolution.jobs import FinetuneJob
from modularevo.evolution.prepare import split_heads
from modularevo.evolution.round_plan import EvolveContext, module_set, round_start
from modularevo.evolution.runner import load_tuned
from modularevo.evolution.search import search_merge
from modularevo.evolution.state import ModelState, RoundRecord
from modularevo.evolution.strategies import Strategy
from modularevo.merging.in_memory import merge_state_dicts
from modularevo.training.strategies import load_plan_masks
from modularevo.utils.seed import derived_seed

logger = logging.getLogger(__name__)


def strategy_round(
    ctx: EvolveContext, s: Strategy, rnd: int, jobs: dict[tuple[str, str], FinetuneJob]
) -> tuple[RoundRecord, ModelState | None]:
    """Strategy ``s``'s record and model state for round ``rnd`` from its fine-tunes."""
    if s.train is None:  # the untouched base: round 0's scores, every round
        base = ctx.run.read_record("base", 0)
        return RoundRecord(s.name, rnd, scores=base.scores, retention=base.retention), None
    tuned, summaries = {}, {}
    for task in ctx.cfg.tasks:
        tuned[task], summaries[task] = load_tuned(jobs[(s.name, task)])
    if not s.merges:  # single_task: each task keeps its own fine-tuned model
        state = ModelState(tasks=tuned)
        scores = ctx.ev.score_all(state.for_task)
        return RoundRecord(s.name, rnd, scores=scores, finetunes=summaries), state
    state, search = _merge_step(ctx, s, rnd, tuned)
    scores = ctx.ev.score_all(state.for_task)
    kept = _retention_scores(ctx, state)
    return RoundRecord(s.name, rnd, scores, search, summaries, retention=kept), state


def _retention_scores(ctx: EvolveContext, state: ModelState) -> dict[str, Any]:
    """Each retention task's fixed round-0 probe head on ``state``'s shared backbone."""
    if ctx.retention is None:
        return {}
    return ctx.retention.score_all(lambda t: {**state.shared, **ctx.retention_heads[t]})


def _merge_step(
    ctx: EvolveContext, s: Strategy, rnd: int, tuned: dict[str, dict[str, torch.Tensor]]
) -> tuple[ModelState, dict[str, Any]]:
    cfg, tasks = ctx.cfg, ctx.cfg.tasks
    _, start_path = round_start(ctx, s.name, rnd)
    current = ModelState.load(start_path)
    heads = {t: split_heads(tuned[t], ctx.ws.head_prefixes(t))[1] for t in tasks}
    models = [tuned[t] for t in tasks]
    masks = _masks(ctx, module_set(ctx, s)) if s.merge_method == "modularevo" else None
    seed = derived_seed(cfg.seed, "merge", s.name, rnd)
    method = s.merge_method
    assert method is not None

    o = cfg.search_for(s)

    def merged(lambdas: list[float], density: float | None) -> dict[str, torch.Tensor]:
        params = s.method_params(lambdas, density, cabs_block=o.cabs_block)
        return merge_state_dicts(current.shared, models, method, params, masks=masks, seed=seed)

    densities: list[float | None] = [None]
    if s.density != "none":  # CABS: only densities with K·n <= m (the config has one)
        densities = list(s.usable_densities(o.densities, len(tasks), cabs_block=o.cabs_block))
    result = search_merge(
        ctx.ev.search_objective(merged, heads),
        len(tasks),
        lambdas=o.lambdas,
        densities=densities,
        passes=o.refine_passes,
        step=o.refine_step,
    )
    logger.info(
        "round %d %s: λ=%s density=%s val=%.4f (%d evaluations, %.1fs)",
        rnd, s.name, result.lambdas, result.density, result.score, result.evaluations,
        result.seconds,
    )  # fmt: skip
    state = ModelState(shared=merged(result.lambdas, result.density), tasks=heads)
    return state, result.to_json()


def _masks(ctx: EvolveContext, modules: dict[str, str]) -> list[dict[str, torch.Tensor]]:
    return [
        load_plan_masks(modules[t], ctx.ws.template(t), allow_modified=True) for t in ctx.cfg.tasks
    ]
