"""Steps before round 1: each domain's module, the base state (round 0) and the evaluator.

* Modules: one per domain of the run's tasks, learned with
  :func:`modularevo.training.modularizer.modularize` (or taken from ``modules:``);
  the file at ``modularize.density`` is used. Their pairwise overlap is saved for the
  report.
* Round 0: the untouched backbone with one linear-probe head per classification task
  (trained on frozen pooled features of train shard 1); a generation task keeps the
  pretrained LM head (zero-shot with the prompt). It is the ``base`` strategy's model
  and every strategy's start.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from modularevo.data.collate import tokenize_split
from modularevo.errors import InputError
from modularevo.evolution.config import EvolveConfig
from modularevo.evolution.evaluate import (
    TaskEvaluator,
    pooled_features,
    prepare_task,
    train_probe,
)
from modularevo.evolution.runner import Workspace
from modularevo.evolution.state import ModelState, RoundRecord, RunDir
from modularevo.modules import load_module, save_module
from modularevo.modules.analysis import random_twin
from modularevo.modules.io import level_tag
from modularevo.training.finetune_config import TrainShard
from modularevo.training.finetune_data import shard_indices
from modularevo.training.strategies import is_head
from modularevo.utils.atomic import atomic_write_text
from modularevo.utils.seed import derived_generator, derived_seed

logger = logging.getLogger(__name__)

_PROBE_MAX_TRAIN = 2000


def task_domain(cfg: EvolveConfig, task: str) -> str:
    """The domain (corpus name) of ``task``: ``domains:`` or the dataset registry's."""
    if task in cfg.domains:
        return cfg.domains[task]
    # deferred: the dataset registry builds its builders on first use
    from modularevo.data import DATASETS

    try:
        return DATASETS.get(task).domain
    except Exception as exc:
        raise InputError(
            f"cannot tell the domain of task {task!r} ({exc}); add `domains: {{{task}: CORPUS}}`"
        ) from None


def build_evaluator(cfg: EvolveConfig, ws: Workspace) -> TaskEvaluator:
    """Tokenize every task's evaluation slices and set up the templates."""
    return _evaluator(cfg, ws, cfg.tasks)


def build_retention_evaluator(cfg: EvolveConfig, ws: Workspace) -> TaskEvaluator | None:
    """The evaluator of ``retention_tasks`` (never trained; fixed round-0 probe heads)."""
    return _evaluator(cfg, ws, cfg.retention_tasks) if cfg.retention_tasks else None


def _evaluator(cfg: EvolveConfig, ws: Workspace, tasks: list[str]) -> TaskEvaluator:
    caps = {
        "search": cfg.max_search_examples,
        "validation": cfg.max_eval_examples,
        "test": cfg.max_eval_examples,
    }
    data, templates = {}, {}
    for task in tasks:
        templates[task] = ws.template(task)
        data[task] = prepare_task(
            task, ws.dataset(task), ws.tokenizer, max_length=cfg.finetune.max_length, caps=caps,
            generation=cfg.finetune.generation, task_type=ws.task_type(task),
        )  # fmt: skip
    return TaskEvaluator(data, templates)


def _lm_kind(cfg: EvolveConfig, ws: Workspace) -> str:
    if cfg.modularize.kind != "auto":
        return cfg.modularize.kind
    # deferred: transformers loads only when a model is needed
    from modularevo.models.load import allowed_kinds

    return allowed_kinds(ws.template(cfg.tasks[0]).config)[0]


def _learn_module(
    cfg: EvolveConfig, ws: Workspace, domain: str, out: Path, texts: Any
) -> dict[float, Path]:
    # deferred: the mask learner loads only when a module is missing
    from modularevo.training.modularize_config import ModularizeConfig
    from modularevo.training.modularizer import modularize

    o = cfg.modularize
    levels = tuple(sorted({0.75, 0.5, 0.25, o.density}, reverse=True))
    mcfg = ModularizeConfig.model_validate(
        {
            "model": cfg.model,
            "kind": _lm_kind(cfg, ws),
            "dataset": domain,
            "steps": o.steps,
            "batch_size": o.batch_size,
            "max_length": o.max_length,
            "lr": o.lr,
            "alpha": o.alpha,
            "max_train_texts": o.max_train_texts,
            "max_val_texts": o.max_val_texts,
            "snapshot_levels": levels,
            "seed": derived_seed(cfg.seed, "modularize", domain) % 2**31,
            "output_dir": str(out),
            "progress": cfg.progress and cfg.stage_progress,
            **o.extra,
        }
    )
    return modularize(mcfg, texts=texts)


def ensure_modules(
    cfg: EvolveConfig, ws: Workspace, run: RunDir, texts: dict[str, Any] | None = None
) -> dict[str, str]:
    """Task -> module file, learning each missing domain module once.

    Raises:
        InputError: a module never reached any snapshot level.
    """
    by_domain: dict[str, str] = {}
    for task in cfg.tasks:
        domain = task_domain(cfg, task)
        if domain in by_domain:
            continue
        if domain in cfg.modules:
            by_domain[domain] = cfg.modules[domain]
            continue
        marker = run.module_dir(domain) / "module.json"
        if marker.is_file():
            by_domain[domain] = str(_marked_module(run, domain, marker))
            continue
        paths = _learn_module(cfg, ws, domain, run.module_dir(domain), (texts or {}).get(domain))
        chosen = _pick_level(paths, cfg.modularize.density, domain)
        by_domain[domain] = str(chosen)
        # the file name only: the run folder may be moved or resumed from another directory
        atomic_write_text(marker, json.dumps({"domain": domain, "file": chosen.name}))
    _write_overlap(run, by_domain)
    return {t: by_domain[task_domain(cfg, t)] for t in cfg.tasks}


def _marked_module(run: RunDir, domain: str, marker: Path) -> Path:
    """The module file a domain's ``module.json`` names (in the domain's module folder).

    Older runs stored a path relative to where the run was started; its file name is
    looked up in the module folder, so a moved run folder still resumes.
    """
    data = json.loads(marker.read_text("utf-8"))
    name = data.get("file") or Path(data["path"]).name
    return run.module_dir(domain) / name


def modules_at_density(
    cfg: EvolveConfig, run: RunDir, modules: dict[str, str], density: float
) -> dict[str, str]:
    """Task -> the snapshot at ``density`` of its learned domain module.

    Mask learning saves a snapshot at every level it crosses (0.75, 0.5, 0.25 and
    ``modularize.density``) as ``module-<level>.safetensors`` beside the chosen one.

    Raises:
        InputError: the module came from ``modules:`` (one file, no snapshots), or the
            learning never reached ``density``.
    """
    out: dict[str, str] = {}
    for task in modules:
        domain = task_domain(cfg, task)
        if domain in cfg.modules:
            raise InputError(
                f"a module_density variant needs the run's own snapshots, but the {domain!r} "
                f"module comes from `modules:` ({cfg.modules[domain]}); drop `modules:` or the "
                "variant's module_density"
            )
        path = run.module_dir(domain) / f"module-{level_tag(density)}.safetensors"
        if not path.is_file():
            have = sorted(p.name for p in run.module_dir(domain).glob("module-*.safetensors"))
            raise InputError(
                f"no {density:g} snapshot of the {domain!r} module ({path}); the snapshots are "
                f"{have}; use one of their levels"
            )
        out[task] = str(path)
    return out


def ensure_random_twins(
    cfg: EvolveConfig, run: RunDir, modules: dict[str, str], *, density: float | None = None
) -> dict[str, str]:
    """Task -> the random twin of its module (same kept count per parameter), made once.

    The twin of domain d is ``modules/<d>/random_twin.safetensors``, seeded by (run seed,
    d); the twin of another snapshot ``density`` is ``random_twin-<level>.safetensors``.
    """
    out: dict[str, str] = {}
    for task, path in modules.items():
        domain = task_domain(cfg, task)
        if density is None:
            twin = run.module_dir(domain) / "random_twin.safetensors"
            gen_key: tuple[Any, ...] = ("random-twin", domain)
        else:
            tag = level_tag(density)
            twin = run.module_dir(domain) / f"random_twin-{tag}.safetensors"
            gen_key = ("random-twin", domain, tag)
        if not twin.is_file():
            gen = derived_generator(cfg.seed, *gen_key)
            save_module(random_twin(load_module(path), gen), twin)
        out[task] = str(twin)
    return out


def _pick_level(paths: dict[float, Path], density: float, domain: str) -> Path:
    if not paths:
        raise InputError(
            f"the {domain!r} module never reached a snapshot level; raise modularize.steps, "
            "modularize.lr or modularize.alpha"
        )
    close = [lv for lv in paths if abs(lv - density) < 1e-9]
    if close:
        return paths[close[0]]
    lowest = min(paths)
    logger.warning("module %s did not reach density %.2f; using %.2f", domain, density, lowest)
    return paths[lowest]


def _write_overlap(run: RunDir, by_domain: dict[str, str]) -> None:
    mods = {d: load_module(p) for d, p in by_domain.items()}
    info: dict[str, Any] = {"density": {d: m.density() for d, m in mods.items()}, "jaccard": {}}
    names = sorted(mods)
    for a in names:
        info["jaccard"][a] = {b: mods[a].overlap(mods[b])["jaccard"] for b in names}
    run.write_json("modules/overlap.json", info)


def split_heads(
    state: dict[str, torch.Tensor], prefixes: tuple[str, ...]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(shared, head) parts of a classifier state dict."""
    shared = {k: v for k, v in state.items() if not is_head(k, prefixes)}
    head = {k: v for k, v in state.items() if is_head(k, prefixes)}
    return shared, head


def ensure_base(
    cfg: EvolveConfig,
    ws: Workspace,
    ev: TaskEvaluator,
    run: RunDir,
    retention: TaskEvaluator | None = None,
) -> None:
    """Write round 0: the base backbone with linear-probe heads, scored on val and test.

    Retention tasks get a probe head too (kept fixed in every later round). Generation
    tasks keep their LM head as pretrained (untied heads only; a tied one is the shared
    embedding).
    """
    if run.has_round("base", 0):
        return
    first = ws.template(cfg.tasks[0])
    shared, _ = split_heads(
        {k: v.detach().clone() for k, v in first.state_dict().items()},
        ws.head_prefixes(cfg.tasks[0]),
    )
    state = ModelState(shared=shared)
    evaluators = {t: ev for t in cfg.tasks}
    if retention is not None:
        evaluators.update({t: retention for t in cfg.retention_tasks})
    for task, task_ev in evaluators.items():
        model = ws.template(task)
        model.load_state_dict({**model.state_dict(), **shared})
        _, head = split_heads(dict(model.state_dict()), ws.head_prefixes(task))
        if task_ev.data[task].task_type == "generation":  # the pretrained LM head, no probe
            state.tasks[task] = {k: v.detach().clone() for k, v in head.items()}
            continue
        train = ws.dataset(task)["train"]
        shard = TrainShard(index=0, count=cfg.rounds, seed=cfg.seed)
        cap = min(cfg.finetune.max_train_examples or _PROBE_MAX_TRAIN, _PROBE_MAX_TRAIN)
        idx = shard_indices(len(train), shard)[:cap]
        ex = tokenize_split(train.select(idx), ws.tokenizer, max_length=cfg.finetune.max_length)
        feats = pooled_features(model, ex, task_ev.data[task].pad_id, 64)
        labels = torch.tensor([e["labels"] for e in ex])
        probe = train_probe(
            feats, labels, task_ev.data[task].num_labels, steps=cfg.probe_steps, seed=cfg.seed
        )
        head = {k: v.detach().clone() for k, v in head.items()}
        head.update({f"classifier.{k}": v for k, v in probe.items()})
        state.tasks[task] = head
    scores = ev.score_all(state.for_task)
    kept = retention.score_all(state.for_task) if retention is not None else {}
    run.write_round(RoundRecord("base", 0, scores=scores, retention=kept), state)
