"""``modularevo quickstart``: the whole method end to end on the embedded defaults, in minutes.

MiniLM and two offline tasks from different domains (the first two available of
``lang-id``, ``code-package``, ``legal-category``, ``math-type``: the first two build
their data in seconds, and fine-tuning clearly learns them, unlike ``math-type``, which
the untouched backbone already solves): learn each domain's module, fine-tune 150
steps inside the modules and in full (lr 3e-4 for both, 48 tokens, warm-up, best step
chosen on validation with the start included; two fine-tunes at a time), merge with
ModularEvo and task arithmetic, evaluate on 600 test examples per task, and print every
figure with its 95% interval and a plain-language reading. The same settings are in
``configs/evolve/quickstart.yaml``. Measured on 2 idle cores from an empty cache: 8.3-9.1 min.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modularevo.evolution.config import EvolveConfig

PREFERRED_TASKS = ("lang-id", "code-package", "legal-category", "math-type")

QUICKSTART: dict[str, Any] = {
    "model": "minilm",
    "rounds": 1,
    "strategies": ["base", "single_task", "modularevo", "ft_task_arithmetic"],
    "modularize": {"steps": 40, "lr": 0.03, "batch_size": 8, "max_length": 64,
                   "max_train_texts": 2000, "max_val_texts": 64,
                   "extra": {"init_high": 0.1, "eval_every": 20, "eval_batches": 1}},
    "finetune": {"lr": 3e-4, "module_lr": 3e-4, "head_lr": 2e-3, "batch_size": 16,
                 "max_length": 48, "max_steps": 150, "warmup_steps": 15, "eval_every": 50,
                 "patience": None, "max_train_examples": 2400},
    "search": {"lambdas": [0.6, 1.0], "densities": [0.5], "refine_passes": 1,
               "refine_step": 0.2},
    "max_eval_examples": 600,
    "max_search_examples": 200,
    "probe_steps": 100,
    "jobs": 2,  # two fine-tunes at once, one thread each: ~1.2x the throughput on 2 cores
    "output_dir": "runs/quickstart",
    "stage_progress": False,
}  # fmt: skip


def default_tasks(count: int = 2) -> list[str]:
    """The first ``count`` registered tasks of :data:`PREFERRED_TASKS` with distinct domains."""
    # deferred: the dataset registry builds its builders on first use
    from modularevo.data import DATASETS

    chosen: list[str] = []
    domains: set[str] = set()
    for name in PREFERRED_TASKS:
        if name in DATASETS.names():
            spec = DATASETS.get(name)
            if spec.domain not in domains and spec.domain in DATASETS.names():
                chosen.append(name)
                domains.add(spec.domain)
        if len(chosen) == count:
            break
    return chosen


def quickstart_config(
    *, tasks: list[str] | None = None, output_dir: str | None = None, **over: Any
) -> EvolveConfig:
    """The quickstart's :class:`EvolveConfig` (keyword arguments override top-level keys)."""
    data = {**QUICKSTART, "tasks": tasks or default_tasks(), **over}
    if output_dir is not None:
        data["output_dir"] = output_dir
    return EvolveConfig.model_validate(data)


def quickstart(
    *,
    tasks: list[str] | None = None,
    output_dir: str | None = None,
    progress: bool = True,
    overrides: list[str] | None = None,
) -> Path:
    """Run the quickstart; returns the run folder (report in ``report/report.md``).

    Args:
        tasks: tasks to use (default: two of :data:`PREFERRED_TASKS`, distinct domains).
        output_dir: run folder (default ``runs/quickstart``; an existing one is resumed).
        progress: show progress bars.
        overrides: ``key=value`` overrides of the config.
    """
    # deferred: quickstart_config is used without torch (config checks, --help)
    from modularevo.evolution.loop import evolve

    cfg = quickstart_config(tasks=tasks, output_dir=output_dir, progress=progress)
    with _quiet_loading():
        return evolve(cfg, overrides=overrides)


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """Hide what is expected here: fresh heads on load, and per-load progress bars.

    The classifier and masked-LM heads of MiniLM are new by design; Transformers' load
    reports and "Loading weights" bars would otherwise fill the log. Restored afterwards.
    """
    from transformers.utils import logging as hf_logging

    ours = logging.getLogger("modularevo.models.load")
    level, hf_level = ours.level, hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    ours.setLevel(logging.ERROR)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        ours.setLevel(level)
        hf_logging.set_verbosity(hf_level)
        if bars:
            hf_logging.enable_progress_bar()
