"""``ram`` and ``ramplus_tl``: Reinforced Agent Merging of task vectors.

Paper: "Reinforced Agent Merging", https://arxiv.org/abs/2601.13572 ; definitions as in
mergekit 0.1.5 (the same float32 operations, so the same bits). With ``τ_t = θ_t − θ_0``
and ``active_t = |τ_t| > epsilon`` per entry, ``c`` = the number of active models there::

    ram:         θ = θ_0 + Σ_t active_t τ_t · ([c = 1] + [c > 1] / c)
    ramplus_tl:  as ram, but model t's unique entries (c = 1) are scaled by
                 λ_t = 1 + r · clamp(ρ_t, 0, α),  ρ_t = shared_t / max(unique_t, epsilon)

where ``shared_t`` / ``unique_t`` count model t's active entries of this tensor with
``c > 1`` / ``c = 1``: a model whose changes mostly overlap others' gets its own
changes boosted. Entries no model changes stay at the base.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from modularevo.merging.methods._params import OpenParam, resolve_params
from modularevo.merging.spec import Capabilities, register_method
from modularevo.utils.lazy import LazyModule

if TYPE_CHECKING:
    import torch
    from torch import Tensor
else:
    torch = LazyModule("torch")

_PAPER = "https://arxiv.org/abs/2601.13572"
EPSILON = OpenParam("epsilon", "global", default=1e-5, ge=0.0,
                    doc="|τ| above which a model counts as changing an entry")  # fmt: skip


def _ram_parts(tensors: Sequence[Tensor], base: Tensor, epsilon: float) -> tuple[Tensor, ...]:
    """(flat task vectors (K, n), active (K, n), count (1, n), overlap (1, n), unique (1, n))."""
    b = base.float()
    flat = torch.stack([t.float() - b for t in tensors], dim=0).view(len(tensors), -1)
    active = flat.abs() > epsilon
    count = active.sum(dim=0, keepdim=True)
    return flat, active, count, count > 1, count == 1


@register_method(
    "ram",
    paper=_PAPER,
    summary="entries changed by one model keep its change; shared ones are averaged",
    params=(EPSILON,),
    capabilities=Capabilities(elementwise=True),
)
def ram(
    tensors: Sequence[Tensor],
    base: Tensor,
    *,
    generators: Any = None,
    masks: Any = None,
    thresholds: Any = None,
    **params: Any,
) -> Tensor:
    """RAM merge of one tensor (formula: module docstring)."""
    p = resolve_params("ram", params, len(tensors))
    flat, active, count, overlap, unique = _ram_parts(tensors, base, float(p["epsilon"]))
    kept = flat * active
    merged = (kept * unique + kept * overlap / count.clamp(min=1)).sum(dim=0, keepdim=True)
    return base.float() + merged.reshape(base.shape)


@register_method(
    "ramplus_tl",
    paper=_PAPER,
    summary="RAM with each model's unique changes boosted by its share of overlap",
    params=(
        OpenParam("r", "global", default=0.1, ge=0.0, doc="boost per unit of overlap ratio"),
        OpenParam("alpha", "global", default=0.2, ge=0.0, doc="cap of the overlap ratio"),
        EPSILON,
    ),
)
def ramplus_tl(
    tensors: Sequence[Tensor],
    base: Tensor,
    *,
    generators: Any = None,
    masks: Any = None,
    thresholds: Any = None,
    **params: Any,
) -> Tensor:
    """RAM+ (tensor-local) merge of one tensor (formula: module docstring)."""
    p = resolve_params("ramplus_tl", params, len(tensors))
    eps = float(p["epsilon"])
    flat, active, count, overlap, unique = _ram_parts(tensors, base, eps)
    shared_n = (active & overlap).sum(dim=1)
    unique_n = (active & unique).sum(dim=1)
    rho = shared_n / unique_n.clamp(min=eps)
    lam = 1 + float(p["r"]) * rho.clamp(min=0, max=float(p["alpha"]))
    kept = flat * active
    merged = (kept * unique * lam.unsqueeze(-1) + kept * overlap / count.clamp(min=1)).sum(
        dim=0, keepdim=True
    )
    return base.float() + merged.reshape(base.shape)
