"""Learn a domain module: a binary mask over a frozen pretrained model (ModularEvo §1.1).

Loss = the domain's LM loss (causal, MLM or seq2seq by ``config.kind``) + α · the
mask's kept fraction over all covered entries. AdamW updates the scores only (plus a
fresh LM head when the checkpoint ships none; the module is the mask, never the head).
When the kept fraction first falls to a snapshot level, the hard mask is written as a
module file (``module-<level>.safetensors``) together with the head it was trained with
(``head-<level>.safetensors``) and the validation LM loss at that moment. The test
split is never read. The loop runs under Hugging Face Accelerate: one CPU process
here, DDP on several devices with the same code (the global batch is split).

Example:
    >>> from modularevo.training.modularize_config import ModularizeConfig
    >>> cfg = ModularizeConfig(model="tiny-bert", dataset="math", steps=50)
    >>> paths = modularize(cfg)  # doctest: +SKIP
    >>> sorted(paths)  # doctest: +SKIP
    [0.25, 0.5, 0.75]
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import Tensor, nn
from tqdm.auto import tqdm

from modularevo.data.lm_batches import TokenIds, lm_batch, pack_texts
from modularevo.modules.io import save_module
from modularevo.modules.layers import MaskedModel
from modularevo.training import _modularize_parts as parts
from modularevo.training.modularize_config import ModularizeConfig
from modularevo.utils.seed import derived_generator, seed_everything

log = logging.getLogger(__name__)

__all__ = ["modularize"]


@dataclass
class _Run:
    cfg: ModularizeConfig
    acc: Accelerator
    model: nn.Module
    wrapped: nn.Module
    scores: Any
    head: list[str]
    opt_scores: torch.optim.Optimizer
    opt_head: torch.optim.Optimizer | None
    train: Tensor  # (num_blocks, max_length)
    val: Tensor
    ids: TokenIds
    out: Path
    sparse_head: str | None = None
    step: int = 0
    crossed: dict[str, dict[str, Any]] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)


def _load(cfg: ModularizeConfig, model: Any, tokenizer: Any) -> tuple[nn.Module, Any]:
    if model is not None:
        return model, tokenizer
    from modularevo.models import load_model

    return load_model(cfg.model, cfg.kind)


def _texts(cfg: ModularizeConfig, texts: dict[str, list[str]] | None) -> tuple[list, list]:
    if texts is None:
        from modularevo.data import load_dataset

        dsd = load_dataset(cfg.dataset, **cfg.dataset_options)
        texts = {"train": dsd["train"]["text"], "validation": dsd["validation"]["text"]}
    train = list(texts["train"])[: cfg.max_train_texts]
    return train, list(texts["validation"])[: cfg.max_val_texts]


def _setup(cfg: ModularizeConfig, model: Any, tokenizer: Any, texts: Any) -> _Run:
    from modularevo.models.arch import describe

    seed_everything(cfg.seed)
    acc = Accelerator(cpu=not torch.cuda.is_available())
    model, tok = _load(cfg, model, tokenizer)
    arch = describe(model)
    scores = parts.build_scores(model, arch, cfg, derived_generator(cfg.seed, "scores"))
    head = parts.head_parameter_names(model, arch, cfg.train_head)
    wrapped = MaskedModel(model, scores, trainable=head)
    ids = TokenIds.of(tok, vocab_size=getattr(model.config, "vocab_size", None))
    train_texts, val_texts = _texts(cfg, texts)
    pack = {"max_length": cfg.max_length, "kind": cfg.kind}
    train, val = pack_texts(train_texts, tok, **pack), pack_texts(val_texts, tok, **pack)
    opt_scores = torch.optim.AdamW(scores.parameters(), lr=cfg.lr, weight_decay=0.0)
    params = dict(model.named_parameters())
    opt_head = (
        torch.optim.AdamW([params[n] for n in head], lr=cfg.lr_head, weight_decay=0.0)
        if head
        else None
    )
    wrapped, opt_scores = acc.prepare(wrapped, opt_scores)
    if opt_head is not None:
        opt_head = acc.prepare(opt_head)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_masked = len(scores.names())  # type: ignore[operator]
    log.info("masking %d tensors, training %d head tensors", n_masked, len(head))
    run = _Run(cfg, acc, model, wrapped, scores, head, opt_scores, opt_head, train, val, ids, out)
    prefix = getattr(model, "base_model_prefix", "")
    if cfg.kind == "masked_lm" and len(arch.heads) == 1 and prefix and hasattr(model, prefix):
        run.sparse_head = arch.heads[0]  # vocabulary projection only on scored tokens
    return run


def _train_batch(run: _Run, step: int) -> dict[str, Tensor]:
    cfg, n = run.cfg, run.train.shape[0]
    start = step * cfg.batch_size
    epoch = start // n
    order = torch.randperm(n, generator=derived_generator(cfg.seed, "order", epoch))
    idx = order[torch.arange(start, start + cfg.batch_size) % n]
    idx = idx[run.acc.process_index :: run.acc.num_processes]  # this process's share
    gen = derived_generator(cfg.seed, "mlm", step, run.acc.process_index)
    batch = lm_batch(run.train[idx], cfg.kind, ids=run.ids, generator=gen,
                     mlm_probability=cfg.mlm_probability)  # fmt: skip
    return {k: v.to(run.acc.device) for k, v in batch.items()}


@torch.no_grad()
def _evaluate(run: _Run) -> float:
    cfg = run.cfg
    run.wrapped.eval()
    losses = []
    for i in range(min(cfg.eval_batches, -(-run.val.shape[0] // cfg.batch_size))):
        blocks = run.val[i * cfg.batch_size : (i + 1) * cfg.batch_size]
        gen = derived_generator(cfg.seed, "val", i)
        batch = lm_batch(blocks, cfg.kind, ids=run.ids, generator=gen,
                         mlm_probability=cfg.mlm_probability)  # fmt: skip
        batch = {k: v.to(run.acc.device) for k, v in batch.items()}
        out = run.wrapped(**batch, sparse_head=run.sparse_head)
        losses.append(float(out.loss))
    run.wrapped.train()
    return sum(losses) / max(len(losses), 1)


def _step(run: _Run, step: int, warmup: bool) -> tuple[float, float]:
    batch = _train_batch(run, step)
    out = run.wrapped(**batch, sparse_head=run.sparse_head)
    kept = run.scores.kept_fraction()
    loss = out.loss if warmup else out.loss + run.cfg.alpha * kept
    run.acc.backward(loss)
    if not warmup:
        run.opt_scores.step()
    if run.opt_head is not None:
        run.opt_head.step()
        run.opt_head.zero_grad(set_to_none=True)
    run.opt_scores.zero_grad(set_to_none=True)
    return float(out.loss.detach()), float(kept.detach())


def _hard_kept(run: _Run) -> float:
    masks = run.scores.hard_masks()
    kept = sum(int(m.sum()) for m in masks.values())
    return kept / max(sum(m.numel() for m in masks.values()), 1)


def _snapshot(run: _Run, level: float, kept: float, val_loss: float) -> Path:
    tag = parts.level_tag(level)
    meta: dict[str, Any] = {
        "level": level, "step": run.step, "kept": kept, "val_loss": val_loss,
        "mask_step": run.step - run.cfg.head_warmup_steps, "kind": run.cfg.kind,
        "model": run.cfg.model, "structured": run.cfg.structured,
        "config": run.cfg.model_dump(mode="json"),
    }  # fmt: skip
    if run.cfg.structured:
        units = run.scores.unit_masks()
        meta["units"] = {
            u: "".join("1" if b else "0" for b in m.tolist()) for u, m in units.items()
        }
    module = parts.build_module(run.scores.hard_masks(), run.model, domain=run.cfg.dataset,
                                metadata=meta)  # fmt: skip
    path = save_module(module, run.out / f"module-{tag}.safetensors")
    head = parts.save_head(run.model, run.head, run.out / f"head-{tag}.safetensors")
    run.crossed[tag] = {"level": level, "step": run.step, "kept": kept, "val_loss": val_loss,
                        "mask_step": run.step - run.cfg.head_warmup_steps,
                        "path": str(path), "head": str(head) if head else None}  # fmt: skip
    log.info("kept %.4f <= %.2f at step %d: wrote %s", kept, level, run.step, path)
    return path


def _checkpoint(run: _Run) -> None:
    if not run.acc.is_main_process:
        return
    params = dict(run.model.named_parameters())
    state = {
        "step": run.step, "crossed": run.crossed, "history": run.history,
        "scores": run.scores.state_dict(),
        "head": {n: params[n].detach().cpu() for n in run.head},
        "opt_scores": run.opt_scores.state_dict(),
        "opt_head": run.opt_head.state_dict() if run.opt_head else None,
    }  # fmt: skip
    parts.save_checkpoint(state, run.out / "checkpoint.pt")


def _resume(run: _Run) -> None:
    state = parts.load_checkpoint(run.out / "checkpoint.pt")
    if state is None:
        return
    run.scores.load_state_dict(state["scores"])
    params = dict(run.model.named_parameters())
    with torch.no_grad():
        for n, t in state["head"].items():
            params[n].copy_(t)
    run.opt_scores.load_state_dict(state["opt_scores"])
    if run.opt_head is not None and state["opt_head"] is not None:
        run.opt_head.load_state_dict(state["opt_head"])
    run.step, run.crossed, run.history = state["step"], state["crossed"], state["history"]
    log.info("resumed from %s at step %d", run.out / "checkpoint.pt", run.step)


def _after_step(run: _Run, loss: float, warmup: bool) -> bool:
    """Evaluate, snapshot and checkpoint after ``run.step``; True when training should stop."""
    cfg = run.cfg
    kept = _hard_kept(run)
    record: dict[str, float] = {"step": run.step, "loss": loss, "kept": kept}
    due = [
        lv for lv in cfg.snapshot_levels if kept <= lv and parts.level_tag(lv) not in run.crossed
    ]
    if due or run.step % cfg.eval_every == 0 or run.step == cfg.steps:
        record["val_loss"] = _evaluate(run)
    if warmup and run.step == cfg.head_warmup_steps and run.acc.is_main_process:
        parts.save_head(run.model, run.head, run.out / "head-dense.safetensors")
        record["dense_val_loss"] = record.get("val_loss", _evaluate(run))
    if run.acc.is_main_process and not warmup:
        for lv in due:
            _snapshot(run, lv, kept, record["val_loss"])
    run.history.append(record)
    if run.step % cfg.checkpoint_every == 0:
        _checkpoint(run)
    last = parts.level_tag(cfg.snapshot_levels[-1])
    return cfg.stop_after_last_level and last in run.crossed


def modularize(
    config: ModularizeConfig,
    *,
    model: nn.Module | None = None,
    tokenizer: Any = None,
    texts: dict[str, list[str]] | None = None,
) -> dict[float, Path]:
    """Learn one domain module and write a module file per snapshot level crossed.

    Args:
        config: the run's :class:`ModularizeConfig`.
        model: a model to use instead of loading ``config.model`` (tests, notebooks).
        tokenizer: its tokenizer (required with ``model``).
        texts: ``{"train": [...], "validation": [...]}`` instead of ``config.dataset``.

    Returns:
        Snapshot level -> module file, for every level the kept fraction reached.

    Raises:
        InputError: unknown model or dataset, a corpus too small for one block, or a
            model with nothing to mask.
    """
    t0 = time.perf_counter()
    run = _setup(config, model, tokenizer, texts)
    _resume(run)
    if run.step == 0:
        run.history.append({"step": 0, "val_loss": _evaluate(run), "kept": _hard_kept(run)})
    total = config.head_warmup_steps + config.steps
    bar = tqdm(total=total, initial=run.step, disable=not config.progress, desc="modularize")
    run.wrapped.train()
    while run.step < total:
        warmup = run.step < config.head_warmup_steps
        loss, _ = _step(run, run.step, warmup)
        run.step += 1
        bar.update(1)
        stop = _after_step(run, loss, warmup)
        bar.set_postfix(loss=f"{loss:.3f}", kept=f"{run.history[-1]['kept']:.3f}")
        if stop:
            break
    bar.close()
    _checkpoint(run)
    _write_summary(run, time.perf_counter() - t0)
    return {v["level"]: Path(v["path"]) for v in run.crossed.values()}


def _write_summary(run: _Run, seconds: float) -> None:
    if not run.acc.is_main_process:
        return
    summary = {
        "config": run.cfg.model_dump(mode="json"),
        "snapshots": run.crossed,
        "steps_run": run.step,
        "seconds": seconds,
        "masked_tensors": len(run.scores.names()),
        "head_tensors": run.head,
        "history": run.history,
    }
    (run.out / "modularize.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
