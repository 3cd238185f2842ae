"""The end of a fine-tuning run: best step restored, test scored, outputs written.

:func:`finish_run` folds gates in, merges LoRA, scores validation and test once, and
writes ``model/`` (a Hugging Face folder with its model card, or an EMoE store),
the module file, ``metrics.json`` and the run files; it returns the
:class:`FinetuneResult`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from modularevo.evaluation.cards import write_model_card
from modularevo.modules.io import save_module
from modularevo.training import strategies as st
from modularevo.training.finetune_config import FinetuneConfig
from modularevo.training.finetune_io import mask_report, write_run_files
from modularevo.training.finetune_run import BEST_FILE, FinetuneRun
from modularevo.training.finetune_select import restore_best, score_examples
from modularevo.training.loop import TrainState
from modularevo.training.recovery import MODULE_FILE, unwrap_trained
from modularevo.utils.atomic import atomic_dir


@dataclass(frozen=True)
class FinetuneResult:
    """What :func:`finetune` produced.

    Attributes:
        output_dir: the run folder.
        model_dir: Hugging Face folder of the fine-tuned model (head included).
        metrics: the content of ``metrics.json``.
        model: the fine-tuned model in memory (best checkpoint restored, LoRA merged,
            unwrapped from Accelerate); the same weights as ``model_dir``.
    """

    output_dir: Path
    model_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    model: nn.Module | None = None


def finish_run(
    run: FinetuneRun, state: TrainState, tokenizer: Any, train_s: float
) -> FinetuneResult:
    """Restore the best step, score validation and test, write the outputs, clean up."""
    cfg, acc = run.cfg, run.acc
    model, module, deploy_info = unwrap_trained(restore_best(run))  # gates folded in
    if cfg.strategy == "lora":
        model = st.merge_lora(model)
    metrics: dict[str, Any] = {
        "strategy": cfg.strategy,
        "emoe": cfg.emoe.model_dump() if cfg.emoe is not None else None,
        "model": cfg.model,
        "task": cfg.task,
        "steps": state.step,
        "best_step": state.best_step,
        "stopped_early": state.stopped_early,
        "train_seconds": round(train_s, 2),
        "num_processes": acc.num_processes,
    }
    metrics["task_type"] = run.data.task_type
    for split in ("validation", "test"):
        metrics[split] = score_examples(run, model, getattr(run.data, split))
    if run.plan is not None:
        metrics.update(mask_report(model, run.plan.masks, run.base_masked))
    metrics.update(deploy_info)
    metrics["history"] = state.history
    model_dir = run.out / "model"
    if acc.is_main_process:
        kind = run.data.task_type
        _save_model(model, tokenizer, model_dir, emoe=cfg.emoe is not None,
                    card=lambda folder: _card(folder, cfg, metrics, kind))  # fmt: skip
        if module is not None:
            save_module(module, run.out / MODULE_FILE)
        write_run_files(run.out, cfg, metrics)
        shutil.rmtree(run.out / "checkpoints", ignore_errors=True)
        (run.out / BEST_FILE).unlink(missing_ok=True)
    acc.wait_for_everyone()
    return FinetuneResult(output_dir=run.out, model_dir=model_dir, metrics=metrics, model=model)


def _save_model(
    model: nn.Module,
    tokenizer: Any,
    model_dir: Path,
    *,
    emoe: bool,
    card: Callable[[Path], None],
) -> None:
    """An HF folder with its model card; an EMoE model adds emoe.json and its gates
    (``load_emoe`` reads them)."""
    if emoe:
        # deferred: EMoE is optional and only converted runs need its store
        from modularevo.emoe.store import save_emoe

        save_emoe(model, model_dir, tokenizer=tokenizer, overwrite=True)
        card(model_dir)
        return
    with atomic_dir(model_dir, overwrite=True) as tmp:
        model.save_pretrained(tmp)  # pyright: ignore[reportCallIssue]
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        card(tmp)


_LOAD_HINT = {
    "classification": "Load it with `modularevo.models.load_model(folder, 'classifier')`, or "
    "in plain transformers with `trust_remote_code=True` (see docs/finetune.md).",
    "generation": "A causal LM scored by greedy exact match; load it with "
    "`modularevo.models.load_model(folder, 'causal_lm')` or `AutoModelForCausalLM`.",
}


_TAG = {"classification": "text-classification", "generation": "text-generation"}


def _card(folder: Path, cfg: FinetuneConfig, metrics: dict[str, Any], task_type: str) -> None:
    """The model card of a fine-tuned model: base, task, strategy, accuracies with n."""
    how = {"module": f"inside the module `{cfg.module}` (weights outside it never move)",
           "full": "in full", "lora": "with LoRA (merged back into dense weights)"}  # fmt: skip
    write_model_card(
        folder,
        title=f"{cfg.model} fine-tuned on {cfg.task}",
        summary=(
            f"`{cfg.model}` fine-tuned on `{cfg.task}` {how.get(cfg.strategy, cfg.strategy)} "
            f"for {metrics['steps']} steps; the best step on validation ({metrics['best_step']}) "
            "was kept. " + _LOAD_HINT[task_type]
        ),
        base_model=cfg.model,
        datasets=[cfg.task],
        results={s: metrics[s] for s in ("validation", "test") if s in metrics},
        command=f"modularevo finetune config.resolved.yaml  # from {cfg.output_dir}",
        config=cfg.model_dump(mode="json"),
        tags=[_TAG[task_type], f"strategy-{cfg.strategy}"],
    )
