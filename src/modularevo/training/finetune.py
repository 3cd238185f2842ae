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
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from modularevo.config import apply_overrides, load_config, validate
from modularevo.data.collate import pad_batch
from modularevo.data.generation import resolve_task_type
from modularevo.errors import InputError
from modularevo.evaluation.cards import write_model_card
from modularevo.evaluation.evaluate import score_split
from modularevo.evaluation.generation import score_generation
from modularevo.modules.io import save_module
from modularevo.training import strategies as st
from modularevo.training.finetune_config import FinetuneConfig
from modularevo.training.finetune_data import RunData, label_info, prepare_data
from modularevo.training.finetune_io import (
    bits_differ,
    check_resumable,
    claims_output_dir,
    clear_run_files,
    dataset_columns,
    mask_report,
    write_run_files,
)
from modularevo.training.loop import (
    TrainState,
    global_batches,
    load_checkpoint,
    local_part,
    save_checkpoint,
    train_step,
)
from modularevo.training.masked_optim import mask_gradients_
from modularevo.training.recovery import MODULE_FILE, unwrap_trained, wrap_for_training
from modularevo.utils.atomic import atomic_dir
from modularevo.utils.curves import Curves
from modularevo.utils.device import build_accelerator
from modularevo.utils.progress import bar_disable
from modularevo.utils.seed import seed_everything

logger = logging.getLogger(__name__)

BEST_FILE = "best.safetensors"


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


@dataclass
class _Run:
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
    _prepare_output(out, config, acc)
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
    run = _build_run(config, acc, model, data, out, teacher=teacher)
    start = time.perf_counter()
    state = _resume_or_start(run)
    state = _train(run, state, on_step)
    train_s = time.perf_counter() - start
    return _finish(run, state, tokenizer, train_s)


def _prepare_output(out: Path, cfg: FinetuneConfig, acc: Accelerator) -> None:
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


def _build_run(
    cfg: FinetuneConfig,
    acc: Accelerator,
    model: nn.Module,
    data: RunData,
    out: Path,
    *,
    teacher: nn.Module | None = None,
) -> _Run:
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
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _linear_schedule(cfg, total))
    model, optimizer = acc.prepare(model, optimizer)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("strategy %s: %d trainable parameters, %d steps", cfg.strategy, n_train, total)
    return _Run(cfg, acc, model, optimizer, scheduler, data, plan, out, total, base_masked)


def _linear_schedule(cfg: FinetuneConfig, total: int) -> Callable[[int], float]:
    """Linear warm-up over ``warmup_steps`` to ``lr``, then linear decay to 0 at ``total``."""
    warm = cfg.warmup_steps

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total - step) / max(1, total - warm))

    return factor


def _resume_or_start(run: _Run) -> TrainState:
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


def _grad_hook(run: _Run) -> Callable[[], None] | None:
    if run.plan is None:
        return None
    params = dict(run.acc.unwrap_model(run.model).named_parameters())
    by_param = {params[n]: m.to(params[n].device) for n, m in run.plan.masks.items()}
    return lambda: mask_gradients_(by_param)


def _train(
    run: _Run, state: TrainState, on_step: Callable[[TrainState], None] | None
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
        _evaluate_and_select(run, state, None)
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
                _evaluate_and_select(run, state, loss)
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


def _evaluate_and_select(run: _Run, state: TrainState, loss: float | None) -> None:
    """Score validation (per-example predictions kept in the history); keep the best step.

    Step 0 (before any update) is evaluated too, so the best step may be the start.
    """
    cfg = run.cfg
    val = _score(run, run.model, run.data.validation)
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


def _score(run: _Run, model: nn.Module, examples: list[dict[str, Any]]) -> dict[str, Any]:
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


def _trainable_state(run: _Run) -> dict[str, Tensor]:
    full: dict[str, Any] = run.acc.get_state_dict(run.model)
    names = {n for n, p in run.acc.unwrap_model(run.model).named_parameters() if p.requires_grad}
    return {n: t.detach().cpu().clone().contiguous() for n, t in full.items() if n in names}


def _save_best(run: _Run) -> None:
    tensors = _trainable_state(run)
    if run.acc.is_main_process:
        tmp = run.out / f".{BEST_FILE}.tmp"
        save_file(tensors, str(tmp))
        tmp.replace(run.out / BEST_FILE)
    run.acc.wait_for_everyone()


def _restore_best(run: _Run) -> nn.Module:
    model = run.acc.unwrap_model(run.model)
    best = run.out / BEST_FILE
    if best.is_file():
        tensors = load_file(str(best))  # on CPU; load_state_dict copies to each param's device
        missing = set(tensors) - set(dict(model.named_parameters()))
        if missing:
            raise InputError(f"best weights name unknown parameters, e.g. {sorted(missing)[:2]}")
        model.load_state_dict(tensors, strict=False)
    return model


def _finish(run: _Run, state: TrainState, tokenizer: Any, train_s: float) -> FinetuneResult:
    cfg, acc = run.cfg, run.acc
    model, module, deploy_info = unwrap_trained(_restore_best(run))  # gates folded in
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
        metrics[split] = _score(run, model, getattr(run.data, split))
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


__all__ = ["FinetuneResult", "TrainState", "bits_differ", "finetune"]
