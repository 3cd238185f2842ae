"""``sce``: select by variance, calculate weights by magnitude, erase minority signs.

Paper: Wan et al., "FuseChat: Knowledge Fusion of Chat Models" (SCE merging),
https://arxiv.org/abs/2408.07990 ; definition as in mergekit 0.1.5's ``sce``::

    τ_t  = θ_t − θ_0
    keep = the int(nonzero · select_topk) entries with the largest variance of τ
           across the models (all entries at select_topk = 1)
    w_t  = mean(τ_t²) / Σ_s mean(τ_s²)        (uniform when the sum is < 1e-6)
    agree_t = sign(τ_t) equals the sign of Σ_s τ_s (≥ 0 counts as +)
    θ    = θ_0 + Σ_t w_t agree_t τ_t / max(Σ_t w_t agree_t, 1e-6)

The weights are computed per tensor from the task vectors themselves (no ``weight``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from modularevo.merging.methods._params import INT8_MASK, OpenParam, resolve_params
from modularevo.merging.spec import register_method
from modularevo.utils.lazy import LazyModule

if TYPE_CHECKING:
    import torch
    from torch import Tensor
else:
    torch = LazyModule("torch")


def variance_mask(tvs: Tensor, density: float) -> Tensor:
    """Float mask of the ``int(nonzero · density)`` entries whose variance across the
    stacked task vectors ``tvs`` (K, *shape) is largest; ones at density ≥ 1."""
    if density <= 0:
        return torch.zeros_like(tvs[0])
    if density >= 1:
        return torch.ones_like(tvs[0])
    var = torch.var(tvs, dim=0, unbiased=False)
    k = int(int(torch.count_nonzero(var)) * density)
    mask = torch.zeros_like(var)
    if k > 0:
        mask.view(-1)[torch.topk(var.abs().view(-1), k=k, largest=True).indices] = 1
    return mask


def magnitude_weights(tvs: Tensor) -> Tensor:
    """Each task vector's mean square, normalized to sum 1 (uniform if the sum < 1e-6)."""
    weights = tvs.square().reshape(tvs.shape[0], -1).mean(dim=1)
    total = float(weights.sum())
    if abs(total) < 1e-6:
        return torch.ones_like(weights) / weights.shape[0]
    return weights / total


@register_method(
    "sce",
    paper="https://arxiv.org/abs/2408.07990",
    summary="keep high-variance entries, weight models by mean τ², erase minority signs",
    params=(
        OpenParam(
            "select_topk",
            "global",
            default=1.0,
            ge=0.0,
            le=1.0,
            doc="fraction of (non-constant) entries kept by variance across models",
        ),
        INT8_MASK,
    ),
    min_models=1,
)
def sce(
    tensors: Sequence[Tensor],
    base: Tensor,
    *,
    generators: Any = None,
    masks: Any = None,
    thresholds: Any = None,
    **params: Any,
) -> Tensor:
    """SCE merge of one tensor (formula: module docstring; mergekit 0.1.5's operations)."""
    p = resolve_params("sce", params, len(tensors))
    b = base.float()
    tvs = torch.stack([t.float() - b for t in tensors], dim=0)
    if p["select_topk"] < 1:
        tvs = tvs * variance_mask(tvs, float(p["select_topk"])).unsqueeze(0)
    majority = (tvs.sum(dim=0) >= 0).to(tvs.dtype) * 2 - 1
    agree = tvs.sign() == majority
    weights = magnitude_weights(tvs)
    weights = weights.reshape(-1, *([1] * (tvs.dim() - 1)))
    erased = weights * agree
    merged = (tvs * erased).sum(dim=0)
    return b + merged / erased.sum(dim=0).clamp(min=1e-6)
