"""Step 2 of ``bench_deploy_sparse.py``: the unstructured module, trained with its zeros held.

The module covers the encoder's Linear weights (q, k, v, attention output, FFN up and down of
every block; embeddings, pooler and head stay dense). Gradual magnitude pruning, per tensor,
on the cubic schedule of Zhu & Gupta 2017 (arXiv:1710.01878) over the first ``ramp`` of the
recovery steps, then the mask is fixed. The weights outside the mask are exactly zero in every
forward (re-zeroed after every optimizer step, their gradients zeroed before it); with a
teacher and a ``DistillConfig`` the loss adds logit KL and hidden-state MSE against the dense
teacher (``modularevo.training.distill.Distiller``).

torch is imported inside the functions only, so that ``bench_deploy_sparse.py --time-dir``
can import this file in the DeepSparse venv, which has no torch.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is absent from the DeepSparse venv that runs ``time``
    from torch import Tensor, nn

ENCODER_LINEAR = re.compile(r"(^|\.)encoder\.layer\.\d+\.")


def encoder_linear_weights(model: nn.Module) -> dict[str, Tensor]:
    """Name -> weight of every Linear inside an encoder block (``encoder.layer.<i>.``)."""
    from torch import nn

    return {
        f"{name}.weight": mod.weight
        for name, mod in model.named_modules()
        if isinstance(mod, nn.Linear) and ENCODER_LINEAR.search(name)
    }


def magnitude_masks(
    weights: Mapping[str, Tensor],
    *,
    sparsity: float,
    keep: Mapping[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """Per tensor, keep the ``round((1 − sparsity)·numel)`` entries of largest |w|.

    Args:
        weights: name -> weight.
        sparsity: the fraction of each tensor set to zero, in [0, 1].
        keep: the current masks; an entry outside them never comes back (pruning is monotone).

    Returns:
        name -> bool mask of the weight's shape with exactly that many True entries.
    """
    import torch

    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    masks: dict[str, Tensor] = {}
    for name, w in weights.items():
        score = w.detach().abs().float().flatten()  # (numel,)
        if keep is not None:
            score = torch.where(keep[name].flatten(), score, torch.full_like(score, -1.0))
        k = round((1.0 - sparsity) * score.numel())
        m = torch.zeros(score.numel(), dtype=torch.bool)
        if k > 0:
            m[score.topk(k).indices] = True
        masks[name] = m.view(w.shape)
    return masks


def cubic_sparsity(step: int, *, target: float, ramp_steps: int) -> float:
    """Zhu & Gupta's schedule: ``target·(1 − (1 − t)^3)``, t = step / ramp_steps (≤ 1)."""
    t = 1.0 if ramp_steps <= 0 else min(1.0, step / ramp_steps)
    return target * (1.0 - (1.0 - t) ** 3)


def zero_outside_(weights: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> None:
    """Set every weight outside its mask to exactly 0 (in place)."""
    import torch

    with torch.no_grad():
        for name, w in weights.items():
            w.mul_(masks[name].to(w.dtype))


def measured_sparsity(weights: Mapping[str, Tensor]) -> float:
    """Fraction of exact zeros over all the given weights."""
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    return zeros / max(1, sum(w.numel() for w in weights.values()))


def _batches(n: int, batch: int, *, seed: int) -> Iterator[Tensor]:
    import torch

    g = torch.Generator().manual_seed(seed)
    while True:
        yield from torch.randperm(n, generator=g).split(batch)


def train_sparse(
    model: nn.Module,
    data: tuple[Tensor, Tensor, Tensor],
    *,
    steps: int,
    sparsity: float,
    ramp: float = 0.5,
    prune_every: int = 10,
    lr: float = 1e-4,
    batch: int = 16,
    seed: int = 0,
    teacher: nn.Module | None = None,
    distill: Any = None,
    log_every: int = 50,
) -> tuple[dict[str, Tensor], list[dict[str, float]]]:
    """Gradual magnitude pruning of the encoder Linears with the zeros held, then a fixed mask.

    Args:
        model: the classifier (``model(input_ids=, attention_mask=, labels=).loss``).
        data: (input_ids, attention_mask, labels) of the train split.
        steps: optimizer steps in all; the sparsity reaches ``sparsity`` at ``ramp·steps``.
        sparsity: target fraction of zeros in every encoder Linear weight.
        ramp: fraction of the steps over which the sparsity rises (cubic schedule).
        prune_every: steps between mask updates during the ramp.
        lr: AdamW peak learning rate (5% warm-up, then linear decay to 0).
        batch: examples per step.
        seed: data order.
        teacher: the dense model to distill from (with ``distill``, a ``DistillConfig``).
        distill: ``DistillConfig`` or None (plain cross-entropy).
        log_every: steps between log records.

    Returns:
        (the final masks, the log: step, loss, scheduled and measured sparsity, seconds).
    """
    import torch
    from torch import nn

    from modularevo.training.distill import Distiller

    weights = encoder_linear_weights(model)
    if not weights:
        raise ValueError("the model has no Linear under encoder.layer.<i>.; nothing to prune")
    student: nn.Module = model
    if teacher is not None and distill is not None:
        student = Distiller(model, teacher, distill)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    warm = max(1, round(0.05 * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * max(0.0, 1 - s / steps)
    )
    ramp_steps = round(ramp * steps)
    masks = magnitude_masks(weights, sparsity=0.0)
    ids, am, y = data
    order = _batches(len(y), batch, seed=seed)
    student.train()
    log: list[dict[str, float]] = []
    t0 = time.time()
    for step in range(steps):
        if step <= ramp_steps and (step % prune_every == 0 or step == ramp_steps):
            target = cubic_sparsity(step, target=sparsity, ramp_steps=ramp_steps)
            masks = magnitude_masks(weights, sparsity=target, keep=masks)
            zero_outside_(weights, masks)
        idx = next(order)
        n = int(am[idx].sum(1).max())  # drop all-pad columns
        loss = student(input_ids=ids[idx, :n], attention_mask=am[idx, :n], labels=y[idx]).loss
        loss.backward()
        for name, w in weights.items():
            if w.grad is not None:
                w.grad.mul_(masks[name].to(w.grad.dtype))
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        zero_outside_(weights, masks)  # AdamW's moments would move pruned entries
        if step % log_every == 0 or step == steps - 1:
            rec = {"step": step, "loss": float(loss.detach()),
                   "sparsity_target": cubic_sparsity(step, target=sparsity,
                                                     ramp_steps=ramp_steps),
                   "sparsity": measured_sparsity(weights), "seconds": time.time() - t0}  # fmt: skip
            log.append(rec)
            print(f"  step {step}/{steps} loss {rec['loss']:.3f} sparsity "
                  f"{rec['sparsity']:.3f} ({rec['seconds']:.0f}s)", flush=True)  # fmt: skip
    if isinstance(student, Distiller):
        student.close()  # its hooks would keep recording block outputs in later forwards
    model.eval()
    return masks, log
