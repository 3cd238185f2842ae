"""``arcee_fusion``: keep only the model's changes that matter most, judged per entry.

Source: mergekit 0.1.5 ``arcee_fusion`` (Arcee AI, https://arcee.ai). For base θ_0 and
one model θ_1::

    importance = |θ_1 − θ_0| · KL(softmax(θ_1) ‖ softmax(θ_0))   (KL per last-dim row)
    threshold  = median + 1.5 · (q3 − q1)            (quantiles of the importance)
    θ          = θ_0 + (θ_1 − θ_0) · [importance ≥ threshold]

Quantiles are read from the sorted importances at index ``int(q · (n − 1))``. Above
10⁶ entries mergekit sorts a random sample of 10⁶ (with replacement); here an evenly
strided sample of about 10⁶ entries is used instead, so the result is deterministic
(the thresholds agree within sampling error; below 10⁶ entries, bit for bit).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from modularevo.merging.methods._params import resolve_params
from modularevo.merging.spec import register_method
from modularevo.utils.lazy import LazyModule

if TYPE_CHECKING:
    import torch
    from torch import Tensor
else:
    torch = LazyModule("torch")

SAMPLE = 1_000_000
"""Entries above which the quantiles are read from a sample."""


def importance(model: Tensor, base: Tensor) -> Tensor:
    """``|θ_1 − θ_0|`` times the KL divergence of the rows' softmaxes (eps 1e-8)."""
    p = torch.nn.functional.softmax(model, dim=-1) + 1e-8
    q = torch.nn.functional.softmax(base, dim=-1) + 1e-8
    kl = torch.sum(p * torch.log(p / q), dim=-1, keepdim=True)
    return (model - base).abs() * kl


def fusion_threshold(scores: Tensor) -> Tensor:
    """``median + 1.5 · IQR`` of ``scores`` (an outlier fence), from sorted values."""
    flat = scores.reshape(-1)
    if flat.numel() > SAMPLE:
        flat = flat[:: -(-flat.numel() // SAMPLE)]
    ordered = torch.sort(flat).values
    idx = (torch.tensor([0.25, 0.5, 0.75]) * (ordered.numel() - 1)).long()
    q1, median, q3 = ordered[idx]
    return median + 1.5 * (q3 - q1)


@register_method(
    "arcee_fusion",
    paper="https://arcee.ai",
    summary="take 1 model's changes only where |Δ|·KL(softmax) is an upper outlier",
    needs_base=True,
    min_models=1,
    max_models=1,
)
def arcee_fusion(
    tensors: Sequence[Tensor],
    base: Tensor,
    *,
    generators: Any = None,
    masks: Any = None,
    thresholds: Any = None,
    **params: Any,
) -> Tensor:
    """``θ_0 + (θ_1 − θ_0) · [importance ≥ median + 1.5 IQR]`` (module docstring)."""
    resolve_params("arcee_fusion", params, len(tensors))
    b, m = base.float(), tensors[0].float()
    scores = importance(m, b)
    mask = (scores >= fusion_threshold(scores)).float()
    return b + (m - b) * mask
