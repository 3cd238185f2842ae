"""Scoring a fine-tuning run on validation and keeping its best step.

Every evaluation scores validation with per-example predictions
(:func:`score_examples`: accuracy and macro-F1, or greedy exact match for generation)
and :func:`evaluate_and_select` keeps the best step's trainable weights in
``best.safetensors`` (patience counts evaluations without a gain); :func:`restore_best`
loads them back at the end.
"""

from __future__ import annotations

import logging
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from modularevo.errors import InputError
from modularevo.evaluation.evaluate import score_split
from modularevo.evaluation.generation import score_generation
from modularevo.training.finetune_run import BEST_FILE, FinetuneRun
from modularevo.training.loop import TrainState

logger = logging.getLogger(__name__)


def evaluate_and_select(run: FinetuneRun, state: TrainState, loss: float | None) -> None:
    """Score validation (per-example predictions kept in the history); keep the best step.

    Step 0 (before any update) is evaluated too, so the best step may be the start.
    """
    cfg = run.cfg
    val = score_examples(run, run.model, run.data.validation)
    val.pop("labels")  # the same every time; metrics.json's validation entry holds them
    best_loss = _best_val_loss(state)
    state.history.append(
        {"step": state.step, "train_loss": loss, **{f"val_{k}": v for k, v in val.items()}}
    )
    logger.info(
        "step %d: train loss %s, val accuracy %.4f, val %s %.4f",
        state.step,
        "–" if loss is None else f"{loss:.4f}",
        val["accuracy"],
        *(("macro-F1", val["macro_f1"]) if "macro_f1" in val else ("answer loss", val["loss"])),
    )
    tie_won = (  # generation: exact match moves in steps of 1/n, the answer loss breaks ties
        run.data.task_type == "generation"
        and abs(val["accuracy"] - state.best_metric) <= cfg.min_delta
        and val["loss"] < best_loss
    )
    if val["accuracy"] > state.best_metric + cfg.min_delta or state.best_step < 0 or tie_won:
        state.best_metric, state.best_step, state.evals_since_best = val["accuracy"], state.step, 0
        _save_best(run)
    else:
        state.evals_since_best += 1
        if cfg.patience is not None and state.evals_since_best >= cfg.patience:
            state.stopped_early = True
            logger.info("early stop at step %d (best step %d)", state.step, state.best_step)


def score_examples(
    run: FinetuneRun, model: nn.Module, examples: list[dict[str, Any]]
) -> dict[str, Any]:
    """Validation or test scores with per-example predictions (classification or generation)."""
    cfg, data = run.cfg, run.data
    if data.task_type == "generation":
        return score_generation(
            model, examples, data.tokenizer, pad_id=data.pad_id,
            max_new_tokens=cfg.generation.max_new_tokens, batch_size=cfg.eval_batch_size,
            accelerator=run.acc, predictions=True,
        )  # fmt: skip
    return score_split(
        model, examples, pad_id=data.pad_id, num_labels=data.num_labels,
        batch_size=cfg.eval_batch_size, accelerator=run.acc, predictions=True,
    )  # fmt: skip


def _best_val_loss(state: TrainState) -> float:
    """Validation loss of the best step so far (inf before the first evaluation)."""
    for entry in state.history:
        if entry["step"] == state.best_step and entry.get("val_loss") is not None:
            return float(entry["val_loss"])
    return float("inf")


def _trainable_state(run: FinetuneRun) -> dict[str, Tensor]:
    full: dict[str, Any] = run.acc.get_state_dict(run.model)
    names = {n for n, p in run.acc.unwrap_model(run.model).named_parameters() if p.requires_grad}
    return {n: t.detach().cpu().clone().contiguous() for n, t in full.items() if n in names}


def _save_best(run: FinetuneRun) -> None:
    tensors = _trainable_state(run)
    if run.acc.is_main_process:
        tmp = run.out / f".{BEST_FILE}.tmp"
        save_file(tensors, str(tmp))
        tmp.replace(run.out / BEST_FILE)
    run.acc.wait_for_everyone()


def restore_best(run: FinetuneRun) -> nn.Module:
    """The unwrapped model with the best step's weights loaded (when any were saved)."""
    model = run.acc.unwrap_model(run.model)
    best = run.out / BEST_FILE
    if best.is_file():
        tensors = load_file(str(best))  # on CPU; load_state_dict copies to each param's device
        missing = set(tensors) - set(dict(model.named_parameters()))
        if missing:
            raise InputError(f"best weights name unknown parameters, e.g. {sorted(missing)[:2]}")
        model.load_state_dict(tensors, strict=False)
    return model
