"""``slerp``: spherical linear interpolation between two models.

Paper: Shoemake, "Animating rotation with quaternion curves" (SIGGRAPH 1985),
https://doi.org/10.1145/325165.325242 ; used for LLM merging by mergekit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from modularevo.errors import InputError
from modularevo.merging.methods._params import OpenParam, resolve_params
from modularevo.merging.spec import register_method
from modularevo.utils.lazy import LazyModule

if TYPE_CHECKING:
    import torch
    from torch import Tensor
else:
    torch = LazyModule("torch")

DOT_THRESHOLD = 0.9995
"""|cos| above which the two tensors count as colinear and slerp falls back to lerp."""
EPS = 1e-8


CHUNK = 1 << 20
"""Elements per chunk of the norm and dot sums (mergekit 0.1.5's ``_CHUNK_ELEMENTS``;
the same partial sums give the same rounding)."""


def slerp_tensors(t: float, v0: Tensor, v1: Tensor) -> Tensor:
    """Interpolate from ``v0`` (t=0) to ``v1`` (t=1) along the great circle.

    The angle Ω is measured between the flattened, normalized tensors; the result is
    ``sin((1-t)Ω)/sin Ω · v0 + sin(tΩ)/sin Ω · v1`` (the raw, unnormalized tensors).
    When ``|cos Ω| > 0.9995`` (nearly colinear) it falls back to ``(1-t) v0 + t v1``.

    Computed as mergekit 0.1.5's ``slerp`` does, in float32 with the same chunked
    partial sums (norms of chunk norms, sums of chunk dots) and float32 coefficients,
    which gives the same bits. A tensor whose norm is at most 1e-8 is not normalized
    (divided by 1), so with a zero end the cosine is 0, Ω = π/2 and the result is
    ``sin(tπ/2) · v1``, not the straight line. ``t`` outside [0, 1] extrapolates
    along the same circle.
    """
    a, b = v0.float().reshape(1, -1), v1.float().reshape(1, -1)
    tt = torch.tensor([[t]], dtype=torch.float32)
    n = a.shape[1]
    if n == 0:
        return ((1 - tt) * a + tt * b).reshape(v0.shape)
    starts = range(0, n, CHUNK)
    norm_a = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(a[:, i : i + CHUNK], dim=1, keepdim=True)
                     for i in starts]), dim=0)  # fmt: skip
    norm_b = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(b[:, i : i + CHUNK], dim=1, keepdim=True)
                     for i in starts]), dim=0)  # fmt: skip
    norm_a = torch.where(norm_a > EPS, norm_a, 1)
    norm_b = torch.where(norm_b > EPS, norm_b, 1)
    dot = torch.stack(
        [((a[:, i : i + CHUNK] / norm_a) * (b[:, i : i + CHUNK] / norm_b)).sum(dim=1, keepdim=True)
         for i in starts]).sum(dim=0).clamp(-1, 1)  # fmt: skip
    linear = dot.abs() > DOT_THRESHOLD
    theta = torch.acos(torch.where(linear, 0, dot))
    sin_theta = torch.sin(theta)
    coef_a = torch.where(linear, 1 - tt, torch.sin((1 - tt) * theta) / sin_theta)
    coef_b = torch.where(linear, tt, torch.sin(tt * theta) / sin_theta)
    return (coef_a * a + coef_b * b).reshape(v0.shape)


@register_method(
    "slerp",
    paper="https://doi.org/10.1145/325165.325242",
    summary="spherical interpolation between 2 models (base→model, or model 1→model 2)",
    params=(
        OpenParam(
            "t",
            "global",
            default=None,
            doc="0 = first end, 1 = second; outside [0, 1] extrapolates (as mergekit)",
        ),
    ),
    needs_base=False,
    optional_base=True,
    min_models=1,
    max_models=2,
)
def slerp(
    tensors: Sequence[Tensor],
    base: Tensor | None = None,
    *,
    generators: Any = None,
    masks: Any = None,
    thresholds: Any = None,
    **params: Any,
) -> Tensor:
    """Slerp between exactly two endpoints with parameter ``t`` (required).

    With a base and one model (mergekit's form: ``base_model`` + one other model) the
    base is the t=0 end; without a base the two models are the t=0 and t=1 ends.

    Raises:
        InputError: the inputs do not make exactly two endpoints.
    """
    p = resolve_params("slerp", params, len(tensors))
    ends = ([base] if base is not None else []) + list(tensors)
    if len(ends) != 2:
        raise InputError(
            f"slerp interpolates exactly 2 endpoints; got {len(tensors)} model(s) "
            f"{'and a base' if base is not None else 'and no base'}. "
            "Give a base and one model, or two models without a base."
        )
    return slerp_tensors(float(p["t"]), ends[0], ends[1])
