"""Learn a domain module: a binary mask over a frozen pretrained model (ModularEvo §1.1).

Loss = the domain's LM loss (causal, MLM or seq2seq by ``config.kind``) + α · the
mask's kept fraction over all covered entries. AdamW updates the scores only; the
model, its LM head included, stays frozen. A checkpoint without an LM head (MiniLM)
first gets one trained on the frozen dense model (:mod:`.head_warmup`, cached and
shared by every domain), so every mask is judged with the same head. Three choices
make the *data*, not the init or the pressure, decide the mask (issue 12):

- the score init ``U[init_low, init_high)`` is seeded from ``(seed, dataset)``, so two
  domains never share it;
- α is calibrated so the pressure on a score equals a quantile of the per-score LM
  gradient (``pressure_quantile``): that share of weights has an LM gradient larger
  than the pressure (the diagnostic is logged at every evaluation and saved);
- the lr warms up, holds its peak until the lowest level falls, then decays; the peak
  is planned so that level falls after ``cross_at`` of the steps (tokens per level saved).

When the kept fraction first falls to a snapshot level, the hard mask is written as
``module-<level>.safetensors`` (the head, if any, is ``head.safetensors`` beside it and
is never part of the module). The test split is never read. Resumable bit-exactly
(:mod:`.modularize_checkpoint`).

This module holds the loop; its parts live beside it: :mod:`.modularize_setup` (the run
and its setup), :mod:`.modularize_objective` (batches, LM gradients, validation loss),
:mod:`.modularize_calibration` (α and the lr plan), :mod:`.modularize_snapshots` (module
files), :mod:`.modularize_resume` (the run's checkpoint) and :mod:`.modularize_report`
(curves and ``modularize.json``). Their public names are importable from here too.

Example:
    >>> from modularevo.training.modularize_config import ModularizeConfig
    >>> cfg = ModularizeConfig(model="tiny-bert", dataset="math", steps=50)
    >>> paths = modularize(cfg)  # doctest: +SKIP
    >>> sorted(paths)  # doctest: +SKIP
    [0.25, 0.5, 0.75]
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn
from tqdm.auto import tqdm

from modularevo.config import apply_overrides, load_config, validate
from modularevo.modules.io import level_tag
from modularevo.training.modularize_calibration import (
    alpha_at,
    calibrate,
    last_crossing,
    lr_multiplier,
)
from modularevo.training.modularize_config import ModularizeConfig
from modularevo.training.modularize_objective import (
    lm_grads,
    sampled_causal_loss,
    train_batch,
    unit_pressure,
    validation_loss,
)
from modularevo.training.modularize_report import (
    TOKEN_LEVELS,
    log_curves,
    tokens_per_level,
    write_summary,
)
from modularevo.training.modularize_resume import checkpoint_run, resume_run
from modularevo.training.modularize_setup import (
    ModularizeRun,
    make_optimizer,
    run_seed,
    score_params,
    setup_run,
)
from modularevo.training.modularize_snapshots import build_module, hard_kept, snapshot
from modularevo.utils.curves import Curves
from modularevo.utils.progress import bar_disable

log = logging.getLogger(__name__)

__all__ = [
    "TOKEN_LEVELS",
    "as_modularize_config",
    "build_module",
    "level_tag",
    "modularize",
    "run_seed",
    "sampled_causal_loss",
    "tokens_per_level",
]


def _step(run: ModularizeRun, step: int, unit: list[Tensor]) -> float:
    lr = float(run.calibration["lr"]) * lr_multiplier(run.cfg, step, last_crossing(run))
    for group in run.opt.param_groups:
        group["lr"] = lr
    loss, grads = lm_grads(run, train_batch(run, step))
    alpha = alpha_at(run, step)
    above = 0
    total = 0
    for p, g, u in zip(score_params(run), grads, unit, strict=True):
        press = alpha * u
        above += int((g.abs() > press).sum())
        total += g.numel()
        p.grad = (g + press).clamp_(-1.0, 1.0)  # the reference's STE clip
    run.share_sum += above / max(total, 1)
    run.share_n += 1
    run.opt.step()
    run.opt.zero_grad(set_to_none=True)
    return loss


def _after_step(run: ModularizeRun, loss: float) -> bool:
    """Evaluate, snapshot and checkpoint after ``run.step``; True when training should stop."""
    cfg = run.cfg
    kept = hard_kept(run)
    tokens = run.step * cfg.batch_size * cfg.max_length
    record: dict[str, float] = {"step": run.step, "tokens": tokens, "loss": loss, "kept": kept,
                                "lr": float(run.opt.param_groups[0]["lr"]),
                                "alpha": alpha_at(run, run.step - 1)}  # fmt: skip
    due = [lv for lv in cfg.snapshot_levels if kept <= lv and level_tag(lv) not in run.crossed]
    if due or run.step % cfg.eval_every == 0 or run.step == cfg.steps:
        record["val_loss"] = validation_loss(run)
        record["share_lm_grad_above_pressure"] = run.share_sum / max(run.share_n, 1)
        run.share_sum, run.share_n = 0.0, 0
        log.info("step %d: kept %.4f, val loss %.4f, %.1f%% of scores with |LM grad| > "
                 "pressure", run.step, kept, record["val_loss"],
                 100 * record["share_lm_grad_above_pressure"])  # fmt: skip
    if run.acc.is_main_process:
        for lv in due:
            snapshot(run, lv, kept, record["val_loss"])
    run.history.append(record)
    if run.step % cfg.checkpoint_every == 0:
        checkpoint_run(run)
    return cfg.stop_after_last_level and level_tag(cfg.snapshot_levels[-1]) in run.crossed


def modularize(
    config: ModularizeConfig | str | Path,
    *,
    overrides: Sequence[str] = (),
    model: nn.Module | None = None,
    tokenizer: Any = None,
    texts: Mapping[str, Sequence[str]] | None = None,
    head_texts: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
) -> dict[float, Path]:
    """Learn one domain module and write a module file per snapshot level crossed.

    Args:
        config: the run's :class:`ModularizeConfig`, or a YAML file (``modularize("m.yaml")``).
        overrides: ``key=value`` overrides applied to ``config`` (e.g. ``["steps=40"]``).
        model: a model to use instead of loading ``config.model`` (tests, notebooks).
        tokenizer: its tokenizer (required with ``model``).
        texts: ``{"train": [...], "validation": [...]}`` instead of ``config.dataset``.
        head_texts: corpus name -> texts for the head warm-up mix, instead of loading
            ``config.head_warmup.corpora``.

    Returns:
        Snapshot level -> module file, for every level the kept fraction reached.

    Raises:
        InputError: unknown model or dataset, a corpus too small for one block, a
            model with nothing to mask, or a checkpoint of another config.
    """
    t0 = time.perf_counter()
    config = as_modularize_config(config, overrides)
    run = setup_run(config, model, tokenizer, texts, head_texts)
    if not resume_run(run):
        run.calibration = calibrate(run)
        make_optimizer(run)
        run.history.append({"step": 0, "tokens": 0, "val_loss": validation_loss(run), "kept": 1.0})
    unit = unit_pressure(run)
    bar = tqdm(total=config.steps, initial=run.step, disable=bar_disable(config.progress),
               desc=f"modularize {config.dataset}")  # fmt: skip
    curves = Curves(run.out, "modularize", tracker=config.tracker,
                    enabled=run.acc.is_main_process)  # fmt: skip
    for row in run.history:  # a resumed run redraws its earlier steps
        log_curves(curves, row)
    run.wrapped.train()
    while run.step < config.steps:
        loss = _step(run, run.step, unit)
        run.step += 1
        bar.update(1)
        stop = _after_step(run, loss)
        log_curves(curves, run.history[-1])
        bar.set_postfix(loss=f"{loss:.3f}", kept=f"{run.history[-1]['kept']:.3f}")
        if stop:
            break
    bar.close()
    curves.close(title=f"modularize {config.dataset} ({config.model})")
    checkpoint_run(run)
    write_summary(run, time.perf_counter() - t0)
    return {v["level"]: Path(v["path"]) for v in run.crossed.values()}


def as_modularize_config(
    config: ModularizeConfig | str | Path, overrides: Sequence[str] = ()
) -> ModularizeConfig:
    """A :class:`ModularizeConfig` from a config object or a YAML path, plus overrides.

    Raises:
        ConfigError: a missing file, unknown keys or invalid values (one message each).
    """
    if isinstance(config, ModularizeConfig):
        if not overrides:
            return config
        data = apply_overrides(config.model_dump(mode="json"), list(overrides))
        return validate(ModularizeConfig, data)
    return load_config(ModularizeConfig, config, list(overrides))
