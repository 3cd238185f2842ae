"""Sign consensus (TIES "elect") and disjoint merging of stacked task vectors.

All functions take task vectors stacked on dim 0 (shape ``(K, *shape)``), already
multiplied by their per-model weights, and return new tensors (``merge_deltas`` may
reuse its input's memory when asked, which the executor does for lean chunks).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from modularevo.utils.lazy import LazyModule

if TYPE_CHECKING:
    import torch
    from torch import Tensor
else:
    torch = LazyModule("torch")


__all__ = ["agreement_mask", "elect_sign", "merge_deltas"]


def elect_sign(weighted: Tensor, method: Literal["sum", "count"] = "sum") -> Tensor:
    """The elected sign (+1/-1) of every entry.

    ``sum`` (TIES paper, mergekit default): sign of the summed (weighted) deltas, i.e.
    the direction with the larger total magnitude. ``count``: the sign most models
    have. Exact ties (sum 0) elect +1, as mergekit does.
    """
    if method == "sum":
        score = weighted.sum(dim=0)
    elif method == "count":
        score = torch.sign(weighted).sum(dim=0)
    else:
        raise ValueError(f"unknown consensus method {method!r}; expected 'sum' or 'count'")
    # sign(score) + 0.5 is -0.5, 0.5 or 1.5, so its sign is 1.0 where score >= 0, else
    # -1.0: in place and float-only (comparisons to bool are far slower on CPU).
    return score.sign_().add_(0.5).sign_()


def agreement_mask(weighted: Tensor, method: Literal["sum", "count"] = "sum") -> Tensor:
    """Bool ``(K, *shape)``: entry of model k is non-zero and has the elected sign."""
    return torch.sign(weighted) == elect_sign(weighted, method).unsqueeze(0)


def merge_deltas(
    weighted: Tensor,
    weights: Tensor,
    *,
    consensus: Literal["sum", "count"] | None,
    normalize: bool,
    inplace: bool = False,
) -> Tensor:
    """Combine weighted task vectors into one delta (mergekit's generalized task arithmetic).

    Args:
        weighted: ``(K, *shape)`` task vectors already multiplied by their weights.
        weights: ``(K,)`` the weights.
        consensus: ``None`` sums all; ``"sum"``/``"count"`` keep only entries agreeing
            with the elected sign (TIES disjoint merge).
        normalize: divide by the sum of the weights that contributed to each entry
            (with consensus: the agreeing models' weights, i.e. a weighted disjoint
            mean; without: all weights). Divisors of 0 (or |Σw| < 1e-8 without
            consensus) become 1.

    Returns:
        The merged delta, shape ``shape``.
    """
    if consensus is None:
        mixed = weighted.sum(dim=0)
        if not normalize:
            return mixed
        total = float(weights.sum())
        return mixed / (1.0 if abs(total) < 1e-8 else total)
    # Float arithmetic instead of bool masks (about 2x faster on CPU): entries that
    # agree with the elected sign are exactly those with (weighted * sign) > 0.
    sign = elect_sign(weighted, consensus)
    kept = weighted.mul_(sign) if inplace else weighted * sign
    kept.clamp_(min=0)  # |agreeing entries|, 0 elsewhere
    mixed = kept.sum(dim=0).mul_(sign)
    if not normalize:
        return mixed
    divisor = torch.tensordot(weights.to(weighted.dtype), kept.sign_(), dims=1)
    least = float(weights.min()) if weights.numel() else 0.0
    if least > 0:
        # positive weights: a divisor is 0 (mixed is ±0 there: ±0 / least = ±0 / 1) or at
        # least the smallest weight, so one clamp does what the five passes below do
        divisor.clamp_(min=least)
    else:
        divisor.add_(divisor.abs().sign_().sub_(1).neg_())  # 0 → 1, float-only
    return mixed.div_(divisor)
