"""``linear``: weighted average of the input models (model soups).

Paper: Wortsman et al., "Model soups", https://arxiv.org/abs/2203.05482
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from modularevo.errors import InputError
from modularevo.merging.methods._params import flag_param, resolve_params, weight_param
from modularevo.merging.spec import Capabilities, as_float32, register_method

if TYPE_CHECKING:
    from torch import Tensor


def _check_sum(params: Mapping[str, Any]) -> list[str]:
    """With ``normalize``, weights summing to (almost) zero have no average."""
    weights = params.get("weight")
    if not params.get("normalize", True) or not isinstance(weights, (list, tuple)):
        return []
    total = sum(float(w) for w in weights)
    if abs(total) >= 1e-8:
        return []
    return [
        f"weight: with normalize the weights {list(weights)} sum to {total}, which has no "
        "average; change the weights or set normalize: false"
    ]


@register_method(
    "linear",
    paper="https://arxiv.org/abs/2203.05482",
    summary="weighted average Σ w_t θ_t / Σ w_t (no base needed)",
    params=(
        weight_param("weight w_t of this model"),
        flag_param("normalize", True, "divide by the sum of the weights"),
        flag_param("int8_mask", False, "accepted for mergekit recipes; no effect here"),
    ),
    needs_base=False,
    capabilities=Capabilities(elementwise=True, numpy=True),
    validate=lambda p, k: _check_sum(p),
)
def linear(
    tensors: Sequence[Tensor],
    base: Tensor | None = None,
    *,
    generators: Any = None,
    masks: Any = None,
    thresholds: Any = None,
    **params: Any,
) -> Tensor:
    """Weighted average ``Σ_t w_t θ_t`` (divided by ``Σ_t w_t`` when ``normalize``).

    Follows mergekit's ``linear``: ``weight`` per model, ``normalize`` default true.
    The base model, if any, is not used; list it among the inputs to average it in.
    Operators only, so it runs on torch tensors and numpy arrays alike.

    Raises:
        InputError: ``normalize`` is on and the weights sum to (almost) zero.
    """
    p = resolve_params("linear", params, len(tensors))
    weights = p["weight"]
    out = as_float32(tensors[0]) * weights[0]
    for w, t in zip(weights[1:], tensors[1:], strict=True):
        out += as_float32(t) * w
    if p["normalize"]:
        total = sum(weights)
        if abs(total) < 1e-8:
            raise InputError(
                f"linear merge with normalize: the weights {weights} sum to {total}; "
                "expected a non-zero sum. Change the weights or set normalize: false."
            )
        out /= total
    return out
