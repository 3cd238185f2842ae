"""``passthrough``: one model's tensor, unchanged (optionally scaled).

Source: mergekit 0.1.5 ``passthrough``. With ``slices:`` it builds a model from layer
ranges of others (a "frankenmerge": stacked or repeated layers); with ``models:`` it
copies one model. ``scale`` multiplies the tensor (e.g. 0 to silence a projection of
a repeated layer, with a per-tensor rule).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from modularevo.merging.methods._params import OpenParam, resolve_params
from modularevo.merging.spec import Capabilities, as_float32, register_method

if TYPE_CHECKING:
    from torch import Tensor


@register_method(
    "passthrough",
    paper="https://github.com/arcee-ai/mergekit/blob/main/docs/merge_methods.md",
    summary="copy 1 model's tensor (× scale); with slices: stack layer ranges",
    params=(OpenParam("scale", "per_model", default=1.0, doc="factor applied to the tensor"),),
    needs_base=False,
    min_models=1,
    max_models=1,
    capabilities=Capabilities(elementwise=True, numpy=True),
)
def passthrough(
    tensors: Sequence[Tensor],
    base: Tensor | None = None,
    *,
    generators: Any = None,
    masks: Any = None,
    thresholds: Any = None,
    **params: Any,
) -> Tensor:
    """The one input tensor in float32, times ``scale`` when it is not 1 (operators only)."""
    p = resolve_params("passthrough", params, len(tensors))
    out = as_float32(tensors[0])
    scale = p["scale"][0]
    return out * scale if scale != 1 else out + 0  # + 0: a new array, never the input
