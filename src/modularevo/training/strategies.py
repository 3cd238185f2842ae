"""Which parameters a fine-tune trains, and how: ``module``, ``full`` and ``lora``.

* ``module`` (mask-guided, METHODS.md §1.2, with the §6 pitfalls fixed): a masked
  parameter trains only inside its mask (gradients, Adam moments and weight decay are
  all confined by :class:`~modularevo.training.masked_optim.MaskedAdamW`); a masked
  parameter whose mask is all zero is frozen; **every parameter without a mask entry
  (embeddings, LayerNorms, poolers) is frozen, except the task head, which trains in
  full**. The reference froze the head at random init; we train it. The task vector
  is therefore non-zero only inside the mask, plus the head (excluded from merging).
* ``full``: every parameter trains (AdamW).
* ``lora``: PEFT LoRA adapters on every Linear outside the head, the head trains in
  full; after training the adapters are merged into dense weights.

Weight decay applies to matrices only (``ndim >= 2``), never to biases or norms.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from modularevo.errors import InputError
from modularevo.models.arch import describe
from modularevo.modules import ModuleMask, load_module, open_module
from modularevo.modules.naming import match_names
from modularevo.training.masked_optim import MaskedAdamW

logger = logging.getLogger(__name__)

_HEAD_FALLBACK = ("classifier", "score", "classification_head", "lm_head", "cls")


@dataclass
class TrainPlan:
    """What to train: parameter name -> mask (module strategy) and the head's names."""

    masks: dict[str, Tensor] = field(default_factory=dict)
    head_prefixes: tuple[str, ...] = ()


def head_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Module names of the task head(s) of ``model`` (from ``models.arch.describe``)."""
    heads = tuple(describe(model).heads)
    if heads:
        return heads
    names = {n for n, _ in model.named_modules()}
    return tuple(n for n in names if n.rsplit(".", 1)[-1] in _HEAD_FALLBACK)


def is_head(name: str, prefixes: Iterable[str]) -> bool:
    """Whether parameter ``name`` belongs to one of the head modules ``prefixes``."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def load_plan_masks(
    path: str | Path, model: nn.Module, *, allow_modified: bool = False
) -> dict[str, Tensor]:
    """Read a module file and key its masks by ``model``'s parameter names.

    Masks of parameters the model lacks (e.g. an LM head of the modularization model)
    are dropped with a warning; the base-model fingerprint is checked when every mask
    maps (skip it with ``allow_modified`` for fine-tuned or merged descendants).

    Raises:
        InputError: if the masks do not fit the model (names, shapes or base values).
    """
    params = dict(model.named_parameters())
    reader = open_module(path)
    names = reader.names()
    mapping = match_names(names, params)
    if not mapping:
        raise InputError(
            f"module {str(path)!r} masks parameters such as {names[:2]} that model "
            f"{type(model).__name__} does not have; was it learned on another architecture?"
        )
    dropped = sorted(set(names) - set(mapping))
    if dropped:
        logger.warning(
            "module masks %d parameter(s) the model lacks, ignored: %s", len(dropped), dropped[:3]
        )
        module: ModuleMask = reader.to_module()
        for n, p in mapping.items():
            if tuple(module.masks[n].shape) != tuple(params[p].shape):
                raise InputError(
                    f"mask {n!r} is {tuple(module.masks[n].shape)} but parameter {p!r} is "
                    f"{tuple(params[p].shape)}; re-run `modularevo modularize` for this model"
                )
    else:
        pairs = [(n, params[p].detach()) for n, p in mapping.items()]
        module = load_module(path, params=pairs, allow_modified=allow_modified)
    return {p: module.masks[n] for n, p in mapping.items()}


def apply_module_plan(model: nn.Module, masks: dict[str, Tensor]) -> TrainPlan:
    """Set ``requires_grad`` for the ``module`` strategy (see the module docstring).

    Returns:
        The plan with the masks of the parameters that train.
    """
    heads = head_prefixes(model)
    plan = TrainPlan(head_prefixes=heads)
    for name, p in model.named_parameters():
        if is_head(name, heads):
            p.requires_grad_(True)
        elif name in masks and bool(masks[name].any()):
            p.requires_grad_(True)
            plan.masks[name] = masks[name]
        else:
            p.requires_grad_(False)
    if not plan.masks:
        raise InputError("the module keeps no weight of this model; nothing would train")
    return plan


def apply_lora(
    model: nn.Module,
    *,
    r: int,
    alpha: int,
    dropout: float,
    target_modules: list[str] | None = None,
) -> nn.Module:
    """Wrap ``model`` with PEFT LoRA adapters; the head trains in full."""
    from peft import LoraConfig, get_peft_model

    heads = head_prefixes(model)
    if target_modules is None:
        target_modules = list(describe(model).maskable)
    cfg = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules,
        modules_to_save=list(heads),
    )
    return get_peft_model(model, cfg)  # pyright: ignore[reportArgumentType]


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold LoRA adapters into dense weights and return the plain model."""
    merge = getattr(model, "merge_and_unload", None)
    return merge() if merge is not None else model


def build_optimizer(
    model: nn.Module,
    plan: TrainPlan | None,
    *,
    lr: float,
    weight_decay: float,
    head_lr: float | None = None,
) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; :class:`MaskedAdamW` when ``plan`` has masks."""
    heads = plan.head_prefixes if plan else head_prefixes(model)
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    by_param: dict[Any, Tensor] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        group_lr = (head_lr or lr) if is_head(name, heads) else lr
        key = (group_lr, weight_decay if p.ndim >= 2 else 0.0)
        groups.setdefault(key, []).append(p)
        if plan and name in plan.masks:
            by_param[p] = plan.masks[name]
    param_groups = [
        {"params": ps, "lr": g_lr, "weight_decay": wd} for (g_lr, wd), ps in groups.items()
    ]
    if plan is not None:
        return MaskedAdamW(param_groups, masks=by_param, lr=lr)
    return torch.optim.AdamW(param_groups, lr=lr)
