"""Fine-tune a classifier on a task: mask-guided (``module``), ``full`` or ``lora``.

Run it from the CLI (``modularevo finetune --config configs/finetune/minilm_lang-id_module.yaml``)
or from Python::

    from modularevo import finetune
    from modularevo.training.finetune_config import FinetuneConfig
    result = finetune(FinetuneConfig(model="tiny-bert", task="lang-id", strategy="full"))

The output folder holds ``model/`` (a Hugging Face folder of the fine-tuned model with its
head; LoRA adapters merged into dense weights), ``metrics.json`` (validation and test
accuracy and macro-F1, training history), ``config.resolved.yaml`` and ``run_info.json``.
While training, ``checkpoints/`` and ``best.safetensors`` let a killed run resume.
The best step is chosen on validation accuracy among every evaluation, step 0 (the
start) included, so a fine-tune that only hurts returns its start; test is evaluated
once, at the end. Every evaluation keeps its per-example predictions (``history[i]
["val_predictions"]``; ``validation``/``test`` hold ``predictions`` and ``labels``).
The learning rate warms up linearly over ``warmup_steps``, then decays linearly to 0.

A generation task (a dataset with a ``target`` column, or ``task_type: generation``)
fine-tunes the causal LM itself with the loss on the answer tokens only, and is scored
by greedy decoding and exact match (``accuracy``; ties within ``min_delta`` are broken
by the lower answer loss); its predictions are the normalised answers.

This module loads the inputs and runs the step loop; its parts live beside it:
:mod:`.finetune_run` (output folder, strategy, optimizer and schedule, resume),
:mod:`.finetune_select` (validation scores, the best step and its weights) and
:mod:`.finetune_finish` (test, ``model/``, model card, metrics; :class:`FinetuneResult`).
Their public names are importable from here too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import nn
from tqdm.auto import tqdm

from modularevo.config import apply_overrides, load_config, validate
from modularevo.data.collate import pad_batch
from modularevo.data.generation import resolve_task_type
from modularevo.errors import InputError
from modularevo.training.finetune_config import FinetuneConfig
from modularevo.training.finetune_data import label_info, prepare_data
from modularevo.training.finetune_finish import FinetuneResult, finish_run
from modularevo.training.finetune_io import bits_differ, claims_output_dir, dataset_columns
from modularevo.training.finetune_run import (
    BEST_FILE,
    FinetuneRun,
    build_run,
    prepare_output,
    resume_or_start,
)
from modularevo.training.finetune_select import evaluate_and_select
from modularevo.training.loop import (
    TrainState,
    global_batches,
    local_part,
    save_checkpoint,
    train_step,
)
from modularevo.training.masked_optim import mask_gradients_
from modularevo.utils.curves import Curves
from modularevo.utils.device import build_accelerator
from modularevo.utils.progress import bar_disable
from modularevo.utils.seed import seed_everything

logger = logging.getLogger(__name__)


def finetune(
    config: FinetuneConfig | str | Path,
    *,
    overrides: Sequence[str] = (),
    model: nn.Module | None = None,
    tokenizer: Any = None,
    dataset: Any = None,
    on_step: Callable[[TrainState], None] | None = None,
    teacher: nn.Module | None = None,
) -> FinetuneResult:
    """Fine-tune ``config.model`` on ``config.task`` with ``config.strategy``.

    Args:
        config: the run's validated config, or a YAML file (``finetune("run.yaml")``).
        overrides: ``key=value`` overrides applied to ``config`` (e.g. ``["max_steps=10"]``).
        model: an in-memory classifier instead of loading ``config.model`` (tests).
        tokenizer: its tokenizer (required with ``model``).
        dataset: a DatasetDict with train/validation/test instead of ``config.task``.
        on_step: called after every step (after any checkpoint) with the train state.
        teacher: the dense teacher for ``config.distill`` instead of ``distill.teacher``.

    Returns:
        The :class:`FinetuneResult`.

    Raises:
        InputError: finished output folder without ``overwrite``, a module that does not
            fit the model, or a dataset lacking splits.
    """
    return _finetune(as_finetune_config(config, overrides), model=model, tokenizer=tokenizer,
                     dataset=dataset, on_step=on_step, teacher=teacher)  # fmt: skip


@claims_output_dir  # one run per output_dir, for the whole run
def _finetune(
    config: FinetuneConfig,
    *,
    model: nn.Module | None,
    tokenizer: Any,
    dataset: Any,
    on_step: Callable[[TrainState], None] | None,
    teacher: nn.Module | None,
) -> FinetuneResult:
    out = Path(config.output_dir)
    seed_everything(config.seed)
    acc = build_accelerator(cpu=config.cpu, mixed_precision=config.mixed_precision)
    if dataset is None:
        # deferred: the datasets library loads only when no dataset is given
        from modularevo.data import load_dataset

        dataset = load_dataset(config.task, **dataset_columns(config))
    generation = resolve_task_type(config.task_type, dataset) == "generation"
    if generation and (config.gates is not None or config.distill is not None):
        # before the output folder is touched: a refused run must not clear a finished one
        key = "gates" if config.gates is not None else "distill"
        raise InputError(
            f"`{key}` works on classification tasks only; {config.task!r} is a generation task. "
            f"Drop `{key}` from the config, or fine-tune a classification task with it"
        )
    prepare_output(out, config, acc)
    if model is None and generation:
        # deferred: transformers loads only when no model is given
        from modularevo.models.load import load_model

        model, tokenizer = load_model(config.model, "causal_lm")
    if model is None:
        # deferred: transformers loads only when no model is given
        from modularevo.models.heads import SequenceClassifier
        from modularevo.models.load import load_model

        num_labels, label_names = label_info(dataset)
        model, tokenizer = load_model(config.model, "classifier", num_labels=num_labels)
        if isinstance(model, SequenceClassifier):
            model.set_label_names(label_names)
    elif tokenizer is None:
        raise InputError("finetune(model=...) needs the model's `tokenizer` too")
    if config.emoe is not None:
        # deferred: EMoE code loads only for an emoe run
        from modularevo.emoe.convert import emoe_convert

        emoe_convert(model, config.emoe)  # deterministic: a resumed run converts identically
    data = prepare_data(config, dataset, tokenizer)
    run = build_run(config, acc, model, data, out, teacher=teacher)
    start = time.perf_counter()
    state = resume_or_start(run)
    state = _train(run, state, on_step)
    train_s = time.perf_counter() - start
    return finish_run(run, state, tokenizer, train_s)


def _grad_hook(run: FinetuneRun) -> Callable[[], None] | None:
    if run.plan is None:
        return None
    params = dict(run.acc.unwrap_model(run.model).named_parameters())
    by_param = {params[n]: m.to(params[n].device) for n, m in run.plan.masks.items()}
    return lambda: mask_gradients_(by_param)


def _train(
    run: FinetuneRun, state: TrainState, on_step: Callable[[TrainState], None] | None
) -> TrainState:
    cfg, acc = run.cfg, run.acc
    steps_per_epoch = len(run.data.train) // cfg.batch_size
    hook = _grad_hook(run)
    bar = tqdm(
        total=run.total_steps,
        initial=state.step,
        desc=f"finetune[{cfg.strategy}]",
        disable=bar_disable(cfg.progress and acc.is_main_process),
    )
    curves = Curves(run.out, "finetune", tracker=cfg.tracker, enabled=acc.is_main_process)
    for row in state.history:  # a resumed run redraws what it had evaluated
        _log_eval(curves, row)
    if cfg.eval_at_start and state.step == 0 and not state.history:  # the start may win
        evaluate_and_select(run, state, None)
        _log_eval(curves, state.history[-1])
    while state.step < run.total_steps and not state.stopped_early:
        epoch, offset = divmod(state.step, steps_per_epoch)
        for idx in global_batches(len(run.data.train), cfg.batch_size, seed=cfg.seed, epoch=epoch)[
            offset:
        ]:
            batch = pad_batch(
                [run.data.train[i] for i in local_part(idx, acc)], pad_id=run.data.pad_id
            )
            loss = train_step(
                acc,
                run.model,
                batch,
                run.optimizer,
                scheduler=run.scheduler,
                max_grad_norm=cfg.max_grad_norm,
                grad_hook=hook,
            )
            state.step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
            curves.log({"train/loss": loss}, state.step)
            if state.step % cfg.eval_every == 0 or state.step == run.total_steps:
                evaluate_and_select(run, state, loss)
                _log_eval(curves, state.history[-1])
            if (
                cfg.checkpoint_every
                and state.step % cfg.checkpoint_every == 0
                and state.step < run.total_steps
                and not state.stopped_early
            ):
                save_checkpoint(
                    acc,
                    run.out / "checkpoints",
                    state,
                    keep=cfg.keep_checkpoints,
                    extra_files=[run.out / BEST_FILE],
                    scheduler=run.scheduler,
                )
            if on_step is not None:
                on_step(state)
            if state.step >= run.total_steps or state.stopped_early:
                break
    bar.close()
    curves.close(title=f"finetune {cfg.task} ({cfg.strategy}, seed {cfg.seed})")
    return state


def as_finetune_config(
    config: FinetuneConfig | str | Path, overrides: Sequence[str] = ()
) -> FinetuneConfig:
    """A :class:`FinetuneConfig` from a config object or a YAML path, plus overrides.

    Raises:
        ConfigError: a missing file, unknown keys or invalid values (one message each).
    """
    if isinstance(config, FinetuneConfig):
        if not overrides:
            return config
        return validate(FinetuneConfig, apply_overrides(config.model_dump(mode="json"),
                                                        list(overrides)))  # fmt: skip
    return load_config(FinetuneConfig, config, list(overrides))


def _log_eval(curves: Curves, row: dict[str, Any]) -> None:
    """The validation scores of one history row (accuracy, macro-F1, loss when scored)."""
    keep = ("accuracy", "macro_f1", "loss")
    curves.log({f"val/{k}": row.get(f"val_{k}") for k in keep}, row["step"])


__all__ = [
    "BEST_FILE",
    "FinetuneResult",
    "TrainState",
    "as_finetune_config",
    "bits_differ",
    "finetune",
]
