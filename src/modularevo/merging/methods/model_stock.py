"""``model_stock``: interpolate the fine-tuned average towards the base by their angle.

Paper: Jang et al., "Model Stock: All we need is just a few fine-tuned models",
https://arxiv.org/abs/2403.19522
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from modularevo.merging.methods._params import flag_param, resolve_params
from modularevo.merging.spec import register_method
from modularevo.utils.lazy import LazyModule

if TYPE_CHECKING:
    import torch
    from torch import Tensor
else:
    torch = LazyModule("torch")


def stock_ratio(cos: Tensor, k: int) -> Tensor:
    """The paper's interpolation ratio ``t = k cos / (1 + (k-1) cos)``.

    ``t = 1`` when the deltas are parallel (cos 1) and ``t = 0`` when orthogonal.
    Where the denominator is ~0 (cos = -1/(k-1), only possible with opposed deltas)
    ``t`` is set to 0, i.e. the base is kept; mergekit would divide by zero there.
    """
    denom = 1 + (k - 1) * cos
    safe = torch.where(denom.abs() < 1e-8, torch.ones_like(denom), denom)
    return torch.where(denom.abs() < 1e-8, torch.zeros_like(cos), k * cos / safe)


def mean_pairwise_cos(deltas: Sequence[Tensor]) -> Tensor:
    """Mean over pairs of the cosine between deltas along the last dim.

    Norm products are clamped to at least 1e-6 and the cosines to [-1, 1] (mergekit).
    """
    coss = []
    for i in range(len(deltas)):
        for j in range(i + 1, len(deltas)):
            a, b = deltas[i], deltas[j]
            prod = (a.norm(dim=-1) * b.norm(dim=-1)).clamp(min=1e-6)
            coss.append(((a * b).sum(dim=-1) / prod).clamp(-1, 1))
    return torch.stack(coss).mean(dim=0)


@register_method(
    "model_stock",
    paper="https://arxiv.org/abs/2403.19522",
    summary="average of ≥2 fine-tuned models pulled to the base by t = k cos/(1+(k-1)cos)",
    params=(flag_param("filter_wise", False, "one angle per row instead of per tensor"),),
    min_models=2,
)
def model_stock(
    tensors: Sequence[Tensor],
    base: Tensor,
    *,
    generators: Any = None,
    masks: Any = None,
    thresholds: Any = None,
    **params: Any,
) -> Tensor:
    """``θ = t · mean_t θ_t + (1 − t) · θ_0`` with ``t`` from the mean pairwise cosine.

    The cosine is taken between the task vectors ``θ_t − θ_0`` flattened over the
    whole tensor, or per vector along the last dim (rows of a matrix; a 1-D tensor is
    one row) with ``filter_wise`` (mergekit's option).
    """
    p = resolve_params("model_stock", params, len(tensors))
    b = base.float()
    rows = (1, -1) if b.dim() < 2 else tuple(b.shape)
    shape2 = rows if p["filter_wise"] else (-1,)
    b2 = b.reshape(shape2)
    ws = [t.float().reshape(shape2) for t in tensors]
    cos = mean_pairwise_cos([w - b2 for w in ws])
    ratio = stock_ratio(cos, len(ws))
    if p["filter_wise"]:
        ratio = ratio.unsqueeze(-1)
    avg = torch.stack(ws).mean(dim=0)
    return (ratio * avg + (1 - ratio) * b2).reshape(base.shape)
