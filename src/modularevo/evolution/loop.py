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
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm

from modularevo.config import apply_overrides, load_config, validate
from modularevo.errors import InputError
from modularevo.evolution.config import EvolveConfig
from modularevo.evolution.evaluate import TaskEvaluator
from modularevo.evolution.finals import save_finals
from modularevo.evolution.jobs import TUNED_FILE, FinetuneJob, resolve_workers, run_jobs
from modularevo.evolution.prepare import (
    build_evaluator,
    build_retention_evaluator,
    ensure_base,
    ensure_modules,
    ensure_random_twins,
    modules_at_density,
    split_heads,
)
from modularevo.evolution.report import write_report
from modularevo.evolution.runner import JobRunner, Workspace, load_tuned, runner_from_json
from modularevo.evolution.search import search_merge
from modularevo.evolution.state import STATE_FILE, ModelState, RoundRecord, RunDir
from modularevo.evolution.strategies import Strategy
from modularevo.merging.in_memory import merge_state_dicts
from modularevo.training.strategies import load_plan_masks
from modularevo.utils.atomic import atomic_write_text
from modularevo.utils.curves import Curves
from modularevo.utils.progress import bar_disable
from modularevo.utils.runinfo import run_info
from modularevo.utils.seed import derived_seed

logger = logging.getLogger(__name__)


class GateError(InputError):
    """single_task did not beat base by ``gate_min_gain`` points on every task."""


@dataclass
class _Ctx:
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


def as_config(
    config: EvolveConfig | str | Path, overrides: list[str] | None = None
) -> EvolveConfig:
    """An :class:`EvolveConfig` from a config object or a YAML path plus overrides."""
    if isinstance(config, EvolveConfig):
        if overrides:
            data = apply_overrides(config.model_dump(mode="json"), overrides)
            return validate(EvolveConfig, data)
        return config
    return load_config(EvolveConfig, config, overrides)


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
    _write_config(cfg, run)
    ws = Workspace(cfg, datasets=datasets)
    ctx = _Ctx(cfg, ws, build_evaluator(cfg, ws), run, {}, JobRunner(cfg, ws), None)
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
                _module_set(ctx, cfg.strategy(name))
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


# Keys that change how a run is shown, scheduled or where it lives, never what it
# computes: a resumed run may differ in them (e.g. started with progress bars, resumed
# with --no-progress, or from a folder that was moved).
_DISPLAY_KEYS = ("progress", "stage_progress", "jobs", "tracker", "output_dir")
# Keys a resumed run may extend: strategies (and variants) added to a run compute
# beside the ones it has; every existing record stays valid.
_EXTENDABLE_KEYS = ("strategies", "variants")


def _write_config(cfg: EvolveConfig, run: RunDir) -> None:
    text = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
    path = run.root / "config.resolved.yaml"
    if path.is_file() and not _same_run(yaml.safe_load(path.read_text("utf-8")), cfg):
        raise InputError(
            f"{str(run.root)!r} holds a run with another config (config.resolved.yaml differs "
            "in more than added strategies or variants); choose another output_dir, or delete "
            "the folder to start over"
        )
    atomic_write_text(path, text)
    run.write_json("run_info.json", run_info(cfg.seed))


def _results_config(data: dict[str, Any]) -> dict[str, Any]:
    """A resolved config without the keys that change no result (the curves' tracker), so
    a run started before such a key existed resumes."""
    out = {k: v for k, v in data.items() if k != "tracker"}
    if isinstance(out.get("finetune"), dict):
        out["finetune"] = {k: v for k, v in out["finetune"].items() if k != "tracker"}
    return out


def _same_run(saved: Any, cfg: EvolveConfig) -> bool:
    """Whether a saved resolved config describes the same computation as ``cfg``."""
    if not isinstance(saved, dict):
        return False
    try:  # through today's schema, so keys added since (with their defaults) compare equal
        saved = type(cfg).model_validate(saved).model_dump(mode="json")
    except ValueError:
        return False
    saved, now = _results_config(saved), _results_config(cfg.model_dump(mode="json"))
    keep = [k for k in {*saved, *now} if k not in _DISPLAY_KEYS + _EXTENDABLE_KEYS]
    if not all(saved.get(k) == now.get(k) for k in keep):
        return False
    old_variants, new_variants = saved.get("variants") or {}, now.get("variants") or {}
    kept = all(new_variants.get(k) == v for k, v in old_variants.items())
    return kept and set(saved.get("strategies") or []) <= set(now.get("strategies") or [])


def _start(ctx: _Ctx, strategy: str, rnd: int) -> tuple[str, Path]:
    if rnd == 1:
        return "base", ctx.run.round_dir("base", 0) / STATE_FILE
    return strategy, ctx.run.round_dir(strategy, rnd - 1) / STATE_FILE


def _module_set(ctx: _Ctx, s: Strategy) -> dict[str, str]:
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


def plan_jobs(ctx: _Ctx, rnd: int, strategies: list[str]) -> dict[tuple[str, str], FinetuneJob]:
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
        start, path = _start(ctx, name, rnd)
        kind = f"{s.train}-random" if s.random_mask else s.train
        if s.trains_own:
            kind = f"{kind}-{name}"
        modules = _module_set(ctx, s)
        for task in ctx.cfg.tasks:
            key = f"{start}-{task}-{kind}"
            if key not in by_key:
                module = modules.get(task) if s.train == "module" else None
                out_dir = str(ctx.run.finetune_dir(rnd, key))
                job = FinetuneJob(key, rnd, task, s.train, str(path), module, out_dir, s.lr)
                by_key[key] = job
            out[(name, task)] = by_key[key]
    return out


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


def _run_strategies(ctx: _Ctx, rnd: int, names: list[str]) -> None:
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
        record, state = _step(ctx, ctx.cfg.strategy(name), rnd, jobs)
        record.seconds = round(time.perf_counter() - t0, 3)
        ctx.run.write_round(record, state)
        ctx.bar.update(1)
    if not ctx.cfg.keep_finetuned:
        for job in unique:  # a fine-tune that a strategy still to run needs is kept
            if not _pending_user(ctx, rnd, job.key):
                (Path(job.out_dir) / TUNED_FILE).unlink(missing_ok=True)


def _pending_user(ctx: _Ctx, rnd: int, key: str) -> bool:
    left = [s for s in ctx.cfg.strategies if not ctx.run.has_round(s, rnd)]
    return any(j.key == key for j in plan_jobs(ctx, rnd, left).values())


def _step(
    ctx: _Ctx, s: Strategy, rnd: int, jobs: dict[tuple[str, str], FinetuneJob]
) -> tuple[RoundRecord, ModelState | None]:
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


def _retention_scores(ctx: _Ctx, state: ModelState) -> dict[str, Any]:
    """Each retention task's fixed round-0 probe head on ``state``'s shared backbone."""
    if ctx.retention is None:
        return {}
    return ctx.retention.score_all(lambda t: {**state.shared, **ctx.retention_heads[t]})


def _merge_step(
    ctx: _Ctx, s: Strategy, rnd: int, tuned: dict[str, dict[str, torch.Tensor]]
) -> tuple[ModelState, dict[str, Any]]:
    cfg, tasks = ctx.cfg, ctx.cfg.tasks
    _, start_path = _start(ctx, s.name, rnd)
    current = ModelState.load(start_path)
    heads = {t: split_heads(tuned[t], ctx.ws.head_prefixes(t))[1] for t in tasks}
    models = [tuned[t] for t in tasks]
    masks = _masks(ctx, _module_set(ctx, s)) if s.merge_method == "modularevo" else None
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


def _masks(ctx: _Ctx, modules: dict[str, str]) -> list[dict[str, torch.Tensor]]:
    return [
        load_plan_masks(modules[t], ctx.ws.template(t), allow_modified=True) for t in ctx.cfg.tasks
    ]
