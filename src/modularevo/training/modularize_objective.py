"""What the mask scores of a modularization run are trained on.

The domain's LM loss on a step's batch (:func:`train_batch`, seeded from the run seed
and the step), its gradient to every score (:func:`lm_grads`; full softmax, or
:func:`sampled_causal_loss` with ``sampled_softmax``), the gradient of the kept
fraction (:func:`unit_pressure`, α = 1) and the validation loss on fixed batches
(:func:`validation_loss`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from modularevo.data.lm_batches import lm_batch
from modularevo.training.modularize_setup import ModularizeRun, score_params
from modularevo.utils.seed import derived_generator


def train_batch(run: ModularizeRun, step: int) -> dict[str, Tensor]:
    """The LM batch of ``step`` (this process's share), seeded from the run seed and the step."""
    cfg, n = run.cfg, run.train.shape[0]
    start = step * cfg.batch_size
    order = torch.randperm(n, generator=derived_generator(run.seed, "order", start // n))
    idx = order[torch.arange(start, start + cfg.batch_size) % n]
    idx = idx[run.acc.process_index :: run.acc.num_processes]  # this process's share
    gen = derived_generator(run.seed, "mlm", step, run.acc.process_index)
    batch = lm_batch(run.train[idx], cfg.kind, ids=run.ids, generator=gen,
                     mlm_probability=cfg.mlm_probability)  # fmt: skip
    return {k: v.to(run.acc.device) for k, v in batch.items()}


@torch.no_grad()
def validation_loss(run: ModularizeRun) -> float:
    """Mean LM loss on the first ``eval_batches`` validation batches (the same for every run)."""
    cfg = run.cfg
    run.wrapped.eval()
    losses = []
    for i in range(min(cfg.eval_batches, -(-run.val.shape[0] // cfg.batch_size))):
        blocks = run.val[i * cfg.batch_size : (i + 1) * cfg.batch_size]
        gen = derived_generator(0, "val", i)  # the same batches for every seed and domain
        batch = lm_batch(blocks, cfg.kind, ids=run.ids, generator=gen,
                         mlm_probability=cfg.mlm_probability)  # fmt: skip
        batch = {k: v.to(run.acc.device) for k, v in batch.items()}
        losses.append(float(run.wrapped(**batch, sparse_head=run.sparse_head).loss))
    run.wrapped.train()
    return sum(losses) / max(len(losses), 1)


def sampled_causal_loss(
    model: nn.Module,
    masked: Mapping[str, Tensor],
    batch: Mapping[str, Tensor],
    n_sampled: int,
    generator: torch.Generator,
) -> Tensor:
    """Causal-LM loss with a sampled softmax: the body runs with ``masked`` parameters,
    the (frozen) head scores only the batch's target ids plus ``n_sampled`` other ids
    drawn uniformly without replacement.

    Each drawn id stands for ``(V - T) / n_sampled`` of the V - T non-target ids, so its
    logit gets ``+log((V - T) / n_sampled)``: an importance-sampled estimate of the
    partition function. With ``n_sampled >= V - T`` this is exactly the full softmax.

    Args:
        model: a causal LM (``base_model_prefix`` body + output embeddings).
        masked: masked parameter tensors by name (others are the model's own).
        batch: ``input_ids``, ``attention_mask``, ``labels`` (-100 = not scored).
        n_sampled: number of non-target ids in the softmax.
        generator: draws the ids (CPU).
    """
    prefix = str(getattr(model, "base_model_prefix", ""))
    body = getattr(model, prefix)
    own = {n[len(prefix) + 1 :]: t for n, t in masked.items() if n.startswith(prefix + ".")}
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    hidden = functional_call(body, own, (), inputs, strict=False)[0]  # (B, T, H)
    labels = batch["labels"][:, 1:]
    scored = labels != -100
    h, y = hidden[:, :-1][scored], labels[scored]  # (n, H), (n,)
    head: Any = model.get_output_embeddings()  # type: ignore[operator]
    head_name = next(n for n, p in model.named_parameters() if p is head.weight)
    weight = masked.get(head_name, head.weight)  # (V, H)
    vocab = weight.shape[0]
    targets = torch.unique(y)
    is_target = torch.zeros(vocab, dtype=torch.bool)
    is_target[targets.cpu()] = True
    others = (~is_target).nonzero().flatten()
    n = min(n_sampled, others.numel())
    drawn = others[torch.randperm(others.numel(), generator=generator)[:n]].to(y.device)
    cand = torch.cat([targets, drawn])
    logits = (h @ weight[cand].t()).float()  # (n, |cand|)
    bias = getattr(head, "bias", None)
    if isinstance(bias, Tensor):
        logits = logits + bias[cand].float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    if n:
        correction = torch.zeros(cand.numel(), device=logits.device)
        correction[targets.numel() :] = math.log(others.numel() / n)
        logits = logits + correction
    position = torch.empty(vocab, dtype=torch.long, device=y.device)
    position[targets] = torch.arange(targets.numel(), device=y.device)
    return nn.functional.cross_entropy(logits, position[y])


def lm_grads(run: ModularizeRun, batch: Mapping[str, Tensor]) -> tuple[float, list[Tensor]]:
    """LM loss and its gradient to every score tensor (the pressure not included)."""
    n_sampled = run.cfg.sampled_softmax
    if n_sampled is not None:
        masked = run.scores.masked_params(dict(run.model.named_parameters()))
        gen = derived_generator(run.seed, "sampled_softmax", run.step)
        out = SimpleNamespace(loss=sampled_causal_loss(run.model, masked, batch, n_sampled, gen))
    else:
        out = run.wrapped(**batch, sparse_head=run.sparse_head)
    params = score_params(run)
    grads = torch.autograd.grad(out.loss, params, allow_unused=True)
    return float(out.loss.detach()), [
        g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params, strict=True)
    ]


def unit_pressure(run: ModularizeRun) -> list[Tensor]:
    """Gradient of the kept fraction (α = 1) to every score: 1/N for unstructured scores."""
    params = score_params(run)
    grads = torch.autograd.grad(run.scores.kept_fraction(), params, allow_unused=True)
    return [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params, strict=True)]
