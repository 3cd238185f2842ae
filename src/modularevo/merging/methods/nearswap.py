"""``nearswap``: take the model's value where it is near the base, keep the base elsewhere.

Source: mergekit 0.1.5 ``nearswap`` (first used for
https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001). Per entry::

    w = clamp(t / max(|θ_0 − θ_1|, 1e-6), 0, 1)
    θ = w · θ_1 + (1 − w) · θ_0

Entries that differ by at most ``t`` take the model's value; entries further apart
move towards it by ``t / |difference|``, so large differences barely change the base.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from modularevo.merging.methods._params import OpenParam, resolve_params
from modularevo.merging.spec import Capabilities, register_method

if TYPE_CHECKING:
    from torch import Tensor


@register_method(
    "nearswap",
    paper="https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001",
    summary="per entry, move the base towards 1 model by t / |difference| (capped at 1)",
    params=(
        OpenParam(
            "t",
            "global",
            default=None,
            doc="difference below which the model's value is taken whole (t <= 0 keeps the base)",
        ),
    ),
    min_models=1,
    max_models=1,
    capabilities=Capabilities(elementwise=True),
)
def nearswap(
    tensors: Sequence[Tensor],
    base: Tensor,
    *,
    generators: Any = None,
    masks: Any = None,
    thresholds: Any = None,
    **params: Any,
) -> Tensor:
    """``w θ_1 + (1 − w) θ_0`` with ``w = clamp(t / max(|θ_0 − θ_1|, 1e-6), 0, 1)``
    (mergekit 0.1.5's definition, the same float32 operations)."""
    p = resolve_params("nearswap", params, len(tensors))
    a, b = base.float(), tensors[0].float()
    weight = (float(p["t"]) / (a - b).abs().clamp(min=1e-6)).clamp(min=0, max=1)
    return weight * b + (1 - weight) * a
