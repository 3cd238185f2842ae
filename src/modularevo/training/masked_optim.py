"""AdamW that changes only the in-mask entries of masked parameters.

For a parameter with bool mask ``M`` every part of the update is restricted to ``M``:
the gradient is multiplied by ``M`` before it enters the Adam moments (so the
moments stay exactly zero outside ``M``), and both the Adam step and the decoupled
weight decay are zeroed outside ``M`` (``masked_fill``). Out-of-mask entries
are therefore bit-identical after any number of steps, whatever ``weight_decay`` is.
This fixes two leaks of the reference code (METHODS.md §6.14): weight decay
shrinking "frozen" weights, and gradient clipping on the unmasked norm (call
:func:`mask_gradients_` before clipping).

Parameters without a mask get the ordinary AdamW update.

Example:
    >>> w = torch.nn.Parameter(torch.ones(2, 2))
    >>> opt = MaskedAdamW([w], masks={w: torch.eye(2, dtype=torch.bool)}, lr=0.1)
    >>> w.grad = torch.ones(2, 2); opt.step()
    >>> w.data.tolist()
    [[0.899..., 1.0], [1.0, 0.899...]]  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from modularevo.errors import InputError


def mask_gradients_(masks: Mapping[Tensor, Tensor]) -> None:
    """Zero, in place, the gradient entries outside each parameter's mask.

    Args:
        masks: parameter -> bool mask of the same shape.
    """
    for p, m in masks.items():
        if p.grad is not None:
            p.grad.masked_fill_(~m, 0.0)


class MaskedAdamW(torch.optim.Optimizer):
    """AdamW (Loshchilov & Hutter, arXiv:1711.05101) confined to per-parameter masks.

    Args:
        params: parameters or param-group dicts, as for :class:`torch.optim.AdamW`.
        masks: parameter -> bool mask of its shape; parameters not in it are unmasked.
        lr: learning rate.
        betas: Adam's moment decay rates.
        eps: Adam's denominator term.
        weight_decay: decoupled decay, applied only inside the mask.

    Raises:
        InputError: if a mask's shape differs from its parameter's.
    """

    def __init__(
        self,
        params: Iterable[Any],
        *,
        masks: Mapping[Tensor, Tensor] | None = None,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)
        self.masks: dict[Tensor, Tensor] = {}
        for p, m in (masks or {}).items():
            if tuple(m.shape) != tuple(p.shape):
                raise InputError(
                    f"mask of shape {tuple(m.shape)} given for a parameter of shape "
                    f"{tuple(p.shape)}; masks must match their parameter (sharded/FSDP "
                    "parameters are not supported by strategy 'module')"
                )
            self.masks[p] = m.to(device=p.device, dtype=torch.bool)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One AdamW step confined to the masks (see the class docstring)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group)
        return loss

    def _update(self, p: Tensor, group: dict[str, Any]) -> None:
        beta1, beta2 = group["betas"]
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        mask = self.masks.get(p)
        grad: Tensor = p.grad  # pyright: ignore[reportAssignmentType]  (step() skips None)
        if mask is not None:
            grad = grad.masked_fill(~mask, 0.0)
        state = self.state[p]
        if not state:
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        step = float(state["step"])
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias1 = 1 - beta1**step
        bias2_sqrt = math.sqrt(1 - beta2**step)
        denom = (exp_avg_sq.sqrt() / bias2_sqrt).add_(eps)
        update = (exp_avg / bias1).div_(denom)
        if wd:
            update.add_(p, alpha=wd)
        if mask is not None:
            update.masked_fill_(~mask, 0.0)
        p.add_(update, alpha=-lr)
