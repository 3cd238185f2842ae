"""Pretrain a small GPT-Neo on the offline domain corpora: the ``gptneo-small`` default.

Run ``modularevo pretrain configs/pretrain/gptneo_small.yaml`` (any key can be
overridden: ``steps=50``). The result is an HF folder (model, byte-level BPE
tokenizer, ``pretrain_metrics.json`` with the validation perplexity) written
atomically to ``cache_dir("models")/<name>``, where ``load_model("gptneo-small")``
finds it. The run is seeded: the same config gives the same weights on one machine.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from modularevo.models._tokenizers import train_bpe_tokenizer
from modularevo.models.defaults import models_dir
from modularevo.models.gptneo import gptneo_config
from modularevo.training.loop import train_step
from modularevo.training.pretrain_config import PretrainConfig
from modularevo.training.pretrain_data import (
    load_corpora,
    pack_blocks,
    sample_batch,
    tokenizer_sample,
)
from modularevo.utils.atomic import atomic_dir
from modularevo.utils.device import build_accelerator
from modularevo.utils.progress import bar_disable
from modularevo.utils.runinfo import run_info
from modularevo.utils.seed import derived_generator, seed_everything

log = logging.getLogger(__name__)
METRICS_FILE = "pretrain_metrics.json"


def output_dir(cfg: PretrainConfig) -> Path:
    """Where the run writes its model: ``cfg.out`` or the embedded-models cache."""
    return Path(cfg.out).expanduser() if cfg.out else models_dir() / cfg.name


def pretrain(cfg: PretrainConfig, *, overwrite: bool = False) -> dict[str, Any]:
    """Train the tokenizer and the model, evaluate, and write the HF folder atomically.

    Args:
        cfg: the validated config.
        overwrite: replace an existing output folder.

    Returns:
        The metrics written to ``pretrain_metrics.json`` (val perplexity, time, sizes).

    Raises:
        InputError: if the output exists and ``overwrite`` is false, or a corpus is unusable.
    """
    from transformers import GPTNeoForCausalLM

    target = output_dir(cfg)
    with atomic_dir(target, overwrite=overwrite) as tmp:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        torch.set_num_threads(cfg.threads)
        seed_everything(cfg.seed)
        corpora = load_corpora(cfg.corpora, max_docs=cfg.max_docs_per_corpus, seed=cfg.seed)
        t0 = time.perf_counter()
        sample = tokenizer_sample(corpora, n_docs=cfg.tokenizer_docs, seed=cfg.seed)
        tok = train_bpe_tokenizer(sample, vocab_size=cfg.vocab_size)
        train = [pack_blocks(c.train, tok, seq_len=cfg.seq_len) for c in corpora]
        val = [
            pack_blocks(c.validation, tok, seq_len=cfg.seq_len)[: cfg.eval_blocks] for c in corpora
        ]
        prep_s = time.perf_counter() - t0
        model = GPTNeoForCausalLM(gptneo_config(cfg.model, vocab_size=len(tok), tokenizer=tok))
        t1, cpu1 = time.perf_counter(), time.process_time()
        history = _train(model, cfg, train, val)
        train_s = time.perf_counter() - t1
        cpu_s = time.process_time() - cpu1
        per_corpus = _evaluate(model, val, batch_size=cfg.batch_size)
        metrics = _metrics(cfg, model, per_corpus, corpora, train, history=history,
                           seconds=(prep_s, train_s, cpu_s))  # fmt: skip
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / METRICS_FILE).write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    log.info("pretrained %s: val ppl %.2f in %.0f s -> %s", cfg.name, metrics["val_ppl"],
             train_s, target)  # fmt: skip
    return metrics


def _lr_factor(step: int, cfg: PretrainConfig) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))  # cosine to 10%


def _train(
    model: torch.nn.Module, cfg: PretrainConfig, train: list[torch.Tensor], val: list[torch.Tensor]
) -> list[dict[str, float]]:
    decay = [p for p in model.parameters() if p.ndim >= 2]  # no decay on biases and norms
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay}]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, cfg))
    gen = derived_generator(cfg.seed, "pretrain-batches")
    acc = build_accelerator(cpu=True)
    history: list[dict[str, float]] = []
    bar = tqdm(range(cfg.steps), desc=f"pretrain {cfg.name}", disable=bar_disable(cfg.progress))
    deadline = time.monotonic() + 60 * cfg.max_minutes if cfg.max_minutes else math.inf
    model.train()
    for step in bar:
        if time.monotonic() > deadline:
            log.warning("max_minutes=%s reached: stopping after %d of %d steps",
                        cfg.max_minutes, step, cfg.steps)  # fmt: skip
            history.append({"step": step, "stopped_early": 1.0})
            break
        blocks = sample_batch(train, batch_size=cfg.batch_size, step=step, generator=gen)
        batch = {"input_ids": blocks, "labels": blocks}
        loss = train_step(acc, model, batch, opt, scheduler=sched, max_grad_norm=cfg.grad_clip)
        bar.set_postfix(loss=f"{loss:.3f}")
        if (step + 1) % cfg.eval_every == 0 and step + 1 < cfg.steps:
            ppl = _mean_ppl(_evaluate(model, val, batch_size=cfg.batch_size))
            history.append({"step": step + 1, "train_loss": loss, "val_ppl": ppl})
            log.info("step %d: train loss %.3f, val ppl %.2f", step + 1, loss, ppl)
    model.eval()
    return history


@torch.no_grad()
def _evaluate(model: torch.nn.Module, val: list[torch.Tensor], *, batch_size: int) -> list[float]:
    """Mean next-token loss per corpus over its validation blocks."""
    model.eval()
    losses = []
    for blocks in val:
        total, n = 0.0, 0
        for start in range(0, len(blocks), batch_size):
            chunk = blocks[start : start + batch_size]
            total += float(model(input_ids=chunk, labels=chunk).loss) * len(chunk)
            n += len(chunk)
        losses.append(total / n)
    return losses


def _mean_ppl(losses: list[float]) -> float:
    return math.exp(sum(losses) / len(losses))


def _metrics(
    cfg: PretrainConfig,
    model: torch.nn.Module,
    losses: list[float],
    corpora: list[Any],
    train: list[torch.Tensor],
    *,
    history: list[dict[str, float]],
    seconds: tuple[float, float, float],
) -> dict[str, Any]:
    steps_done = next((int(h["step"]) for h in history if "stopped_early" in h), cfg.steps)
    return {
        "name": cfg.name,
        "val_ppl": _mean_ppl(losses),
        "val_loss": sum(losses) / len(losses),
        "val_ppl_per_corpus": {c.name: math.exp(v) for c, v in zip(corpora, losses, strict=True)},
        "params": sum(p.numel() for p in model.parameters()),
        "steps_done": steps_done,
        "train_tokens_seen": steps_done * cfg.batch_size * cfg.seq_len,
        "train_tokens_available": {
            c.name: int(t.numel()) for c, t in zip(corpora, train, strict=True)
        },
        "prepare_seconds": round(seconds[0], 1),
        "train_seconds": round(seconds[1], 1),
        "train_cpu_seconds": round(seconds[2], 1),
        "threads": cfg.threads,
        "history": history,
        "config": cfg.model_dump(),
        "run": run_info(cfg.seed),
    }


def read_metrics(folder: str | Path) -> dict[str, Any] | None:
    """The ``pretrain_metrics.json`` of a pretrained folder, or None."""
    path = Path(folder) / METRICS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
