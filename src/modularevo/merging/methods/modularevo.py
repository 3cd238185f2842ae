"""``modularevo``: module-aware task arithmetic (ModularEvo's knowledge composition).

Paper: ModularEvo (Zachary941/ModularEvo; METHODS.md §1.3). Each task vector is
restricted to its module mask ``M_t`` (the weights its module may change), one λ per
task::

    θ = θ_0 + Σ_t λ_t (M_t ⊙ τ_t)                     overlap: sum   (the paper)
    θ = θ_0 + Σ_t λ_t (M_t ⊙ τ_t) / max(1, c)          overlap: mean

where ``c`` counts the modules covering an entry (the overlap-aware variant found
unused in the reference code). A model without a mask (``None``) is unrestricted and
covers every entry. With all masks ``None`` this is plain task arithmetic.

Restricting to the mask also drops drift outside the module (e.g. weight decay on
"frozen" weights, METHODS.md §6.14): out-of-mask entries stay at the base.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from modularevo.errors import InputError
from modularevo.merging.methods._params import resolve_params, weight_param
from modularevo.merging.spec import Capabilities, Param, register_method
from modularevo.utils.lazy import LazyModule

if TYPE_CHECKING:
    import torch
    from torch import Tensor
else:
    torch = LazyModule("torch")


def _bool_mask(mask: Tensor, shape: torch.Size, i: int) -> Tensor:
    if mask.shape != shape:
        raise InputError(
            f"module mask of model {i} has shape {tuple(mask.shape)} but the tensor has "
            f"shape {tuple(shape)}; expected equal shapes. Use the mask file made for "
            "this architecture."
        )
    return mask if mask.dtype == torch.bool else mask != 0


@register_method(
    "modularevo",
    paper="https://github.com/Zachary941/ModularEvo",
    summary="task arithmetic with each τ_t restricted to its module mask, one λ per task",
    params=(
        weight_param("λ_t of this task"),
        Param(
            "overlap",
            "global",
            default="sum",
            choices=("sum", "mean"),
            doc="sum: add overlapping modules; mean: divide by the number of modules there",
        ),
    ),
    uses_masks=True,
    capabilities=Capabilities(elementwise=True),
)
def modularevo(
    tensors: Sequence[Tensor],
    base: Tensor,
    *,
    generators: Any = None,
    masks: Sequence[Tensor | None] | None = None,
    thresholds: Any = None,
    **params: Any,
) -> Tensor:
    """``θ_0 + Σ_t λ_t (M_t ⊙ τ_t)`` (``overlap: mean`` divides by the module count).

    Raises:
        InputError: a mask's shape differs from the tensor's.
    """
    p = resolve_params("modularevo", params, len(tensors))
    base32 = base.float()
    mask_list = list(masks) if masks is not None else [None] * len(tensors)
    if len(mask_list) != len(tensors):
        raise ValueError(f"modularevo got {len(mask_list)} masks for {len(tensors)} models")
    out = torch.zeros_like(base32)
    count = torch.zeros_like(base32) if p["overlap"] == "mean" else None
    for i, (w, t, mk) in enumerate(zip(p["weight"], tensors, mask_list, strict=True)):
        delta = t.float() - base32
        if mk is None:
            out += w * delta
            if count is not None:
                count += 1
            continue
        bm = _bool_mask(mk, base32.shape, i)
        out += w * torch.where(bm, delta, torch.zeros_like(delta))
        if count is not None:
            count += bm
    if count is not None:
        out /= count.clamp(min=1)
    return base32 + out
