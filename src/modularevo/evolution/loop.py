"""Multi-round evolution: fine-tune every task, merge into the current model, evaluate.

For each round r = 1..R and each strategy (see :mod:`modularevo.evolution.strategies`):

1. every task fine-tunes from the strategy's current model on its train shard r
   (round 1 starts from the base; jobs with the same start, task and kind run once);
2. the fine-tuned backbones are merged into the current backbone with the strategy's
   method; heads are excluded and each task keeps its own fine-tuned head; λ (and
   density) are chosen by :func:`~modularevo.evolution.search.search_merge` on the
   validation slice only;
3. every task is scored on validation and test; the merged model is the next
   round's current model.

Round 0 is the untouched base with linear-probe heads. With ``gate_min_gain`` set, the
gate runs next: round 1 of ``single_task`` only, then the run stops (:class:`GateError`)
unless single_task beats base by that many points on every task's validation; modules
and every other strategy (the main phase) come after. Retention tasks are scored with
their fixed round-0 probe heads on every merged backbone.

Every step writes its outputs atomically, so a killed run resumes where it stopped.

This module runs the rounds; their parts live beside it: :mod:`.run_config` (the
resolved config and the same-run check on resume), :mod:`.gate`, :mod:`.round_plan`
(each strategy's start and the shared fine-tune jobs) and :mod:`.round_step` (keep or
merge, then score). Their public names are importable from here too.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from modularevo.evolution.config import EvolveConfig
from modularevo.evolution.finals import save_finals
from modularevo.evolution.gate import GateError, check_gate
from modularevo.evolution.jobs import TUNED_FILE, resolve_workers, run_jobs
from modularevo.evolution.prepare import (
    build_evaluator,
    build_retention_evaluator,
    ensure_base,
    ensure_modules,
)
from modularevo.evolution.report import write_report
from modularevo.evolution.round_plan import EvolveContext, module_set, pending_user, plan_jobs
from modularevo.evolution.round_step import strategy_round
from modularevo.evolution.run_config import as_config, write_config
from modularevo.evolution.runner import JobRunner, Workspace, runner_from_json
from modularevo.evolution.state import RunDir
from modularevo.utils.curves import Curves
from modularevo.utils.progress import bar_disable


def evolve(
    config: EvolveConfig | str | Path,
    *,
    overrides: list[str] | None = None,
    datasets: Mapping[str, Any] | None = None,
    texts: Mapping[str, Any] | None = None,
) -> Path:
    """Run (or resume) a multi-round evolution and write its report.

    Args:
        config: an :class:`EvolveConfig` or a YAML file.
        overrides: ``key=value`` overrides (e.g. ``rounds=2``).
        datasets: task -> DatasetDict instead of the registered datasets (tests).
        texts: domain -> ``{"train": [...], "validation": [...]}`` corpora for modularize.

    Returns:
        The run folder (``report/report.md`` inside).

    Raises:
        InputError: the folder holds a run with another config, or bad inputs.
    """
    cfg = as_config(config, overrides)
    run = RunDir(cfg.output_dir)
    write_config(cfg, run)
    ws = Workspace(cfg, datasets=datasets)
    ctx = EvolveContext(cfg, ws, build_evaluator(cfg, ws), run, {}, JobRunner(cfg, ws), None)
    ctx.retention = build_retention_evaluator(cfg, ws)
    total = 2 + cfg.rounds * len(cfg.strategies) + (cfg.gate_min_gain is not None)
    with tqdm(total=total, desc="evolve", disable=bar_disable(cfg.progress), unit="step") as bar:
        ctx.bar = bar
        bar.set_description("evolve: base + probes")
        ensure_base(cfg, ws, ctx.ev, run, ctx.retention)
        base_state = run.read_state("base", 0)
        ctx.retention_heads = {t: base_state.tasks[t] for t in cfg.retention_tasks}
        bar.update(1)
        if cfg.gate_min_gain is not None:  # before the main phase (modules included)
            bar.set_description("evolve: gate (single_task, round 1)")
            _run_strategies(ctx, 1, ["single_task"])
            gains = check_gate(ctx.run, cfg.tasks, cfg.gate_min_gain)
            tqdm.write(
                "gate passed: single_task − base on validation after round 1 (points): "
                + ", ".join(f"{t} {g:+.1f}" for t, g in gains.items())
                + f" (>= {cfg.gate_min_gain:g} required)"
            )
        if any(cfg.strategy(s).train == "module" for s in cfg.strategies):
            bar.set_description("evolve: modules")
            ctx.modules = ensure_modules(cfg, ws, run, dict(texts or {}))
            for name in cfg.strategies:  # every mask a strategy uses, before any training
                module_set(ctx, cfg.strategy(name))
        bar.update(1)
        for rnd in range(1, cfg.rounds + 1):
            _run_strategies(ctx, rnd, cfg.strategies)
    save_finals(cfg, ws, run)
    write_report(run.root, cfg)
    _round_curves(cfg, run)
    return run.root


def _round_curves(cfg: EvolveConfig, run: RunDir) -> None:
    """Validation accuracy per strategy and task over rounds (round 0: the base), as
    ``report/curves.png`` and TensorBoard scalars (each fine-tune draws its own)."""
    curves = Curves(run.root / "report", "evolve", tracker=cfg.tracker)
    for rec in sorted(run.records(), key=lambda r: r.round):
        accs = {t: s["validation"]["accuracy"] for t, s in rec.scores.items()
                if "accuracy" in s.get("validation", {})}  # fmt: skip
        # every task in TensorBoard and the JSON; the picture shows each strategy's mean
        curves.log({f"val/{rec.strategy}/{t}": a for t, a in accs.items()}, rec.round,
                   plot=False)  # fmt: skip
        if not accs:
            continue
        mean = sum(accs.values()) / len(accs)
        # round 0 is the base, where every strategy starts
        starts = cfg.strategies if rec.round == 0 else [rec.strategy]
        curves.log({f"val/{s}/mean": mean for s in starts}, rec.round)
    curves.close(title=f"evolve: mean validation accuracy over {', '.join(cfg.tasks)}",
                 xlabel="round (0: the base)")  # fmt: skip


def _run_strategies(ctx: EvolveContext, rnd: int, names: list[str]) -> None:
    pending = [s for s in names if not ctx.run.has_round(s, rnd)]
    ctx.bar.update(len(names) - len(pending))
    if not pending:
        return
    jobs = plan_jobs(ctx, rnd, pending)
    unique = sorted({j.key: j for j in jobs.values()}.values(), key=lambda j: j.key)
    workers = 1 if ctx.ws.in_memory_data else resolve_workers(ctx.cfg.jobs)
    ctx.bar.set_description(f"evolve r{rnd}: {len(unique)} fine-tunes")
    run_jobs(
        unique,
        ctx.runner,
        workers=workers,
        config_json=ctx.cfg.model_dump(mode="json"),
        factory=runner_from_json,
    )
    for name in pending:
        ctx.bar.set_description(f"evolve r{rnd}: {name}")
        t0 = time.perf_counter()
        record, state = strategy_round(ctx, ctx.cfg.strategy(name), rnd, jobs)
        record.seconds = round(time.perf_counter() - t0, 3)
        ctx.run.write_round(record, state)
        ctx.bar.update(1)
    if not ctx.cfg.keep_finetuned:
        for job in unique:  # a fine-tune that a strategy still to run needs is kept
            if not pending_user(ctx, rnd, job.key):
                (Path(job.out_dir) / TUNED_FILE).unlink(missing_ok=True)


__all__ = ["GateError", "as_config", "check_gate", "evolve", "plan_jobs"]
