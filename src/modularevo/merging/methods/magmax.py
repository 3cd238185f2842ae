"""``magmax``: keep, entry by entry, the task vector of largest magnitude.

Paper: Marczak et al., "MagMax: Leveraging Model Merging for Seamless Continual Learning",
ECCV 2024, https://arxiv.org/abs/2407.06322. In the paper the task vectors come from
sequential fine-tuning (each task starts from the previous fine-tune), so merging after
every task needs only the running result: ``magmax(magmax(τ_1, τ_2), τ_3)`` equals
``magmax(τ_1, τ_2, τ_3)``, the constant-memory form evolution can use.

``θ = θ_0 + λ τ*`` with ``τ*_i = τ_{t,i}`` for the ``t`` of largest ``|τ_{t,i}|`` (the first
such ``t`` on a tie), ``τ_t = w_t (θ_t − θ_0)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from modularevo.merging.methods._params import OpenParam, resolve_params, weight_param
from modularevo.merging.spec import Capabilities, register_method
from modularevo.utils.lazy import LazyModule

if TYPE_CHECKING:
    import torch
    from torch import Tensor
else:
    torch = LazyModule("torch")


def max_magnitude(taus: Sequence[Tensor]) -> Tensor:
    """Entry-wise the value of largest magnitude across ``taus`` (first one on a tie)."""
    out = taus[0].clone()
    for tau in taus[1:]:
        bigger = tau.abs() > out.abs()
        out = torch.where(bigger, tau, out)
    return out


@register_method(
    "magmax",
    paper="https://arxiv.org/abs/2407.06322",
    summary="θ0 + λ · (per entry, the task vector of largest |τ|)",
    params=(
        weight_param(),
        OpenParam("lambda", "global", default=1.0, doc="scale of the merged task vector"),
    ),
    capabilities=Capabilities(elementwise=True),
)
def magmax(
    tensors: Sequence[Tensor],
    base: Tensor,
    *,
    generators: Any = None,
    masks: Any = None,
    thresholds: Any = None,
    **params: Any,
) -> Tensor:
    """``θ_0 + λ τ*`` (see the module doc)."""
    p = resolve_params("magmax", params, len(tensors))
    b = base.float()
    taus = [(t.float() - b) * float(w) for t, w in zip(tensors, p["weight"], strict=True)]
    return b + float(p["lambda"]) * max_magnitude(taus)
