"""``slerp``: spherical linear interpolation between two models.

Paper: Shoemake, "Animating rotation with quaternion curves" (SIGGRAPH 1985),
https://doi.org/10.1145/325165.325242 ; used for LLM merging by mergekit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from modularevo.errors import InputError
from modularevo.merging.methods._params import OpenParam, resolve_params
from modularevo.merging.spec import register_method

if TYPE_CHECKING:
    from torch import Tensor

DOT_THRESHOLD = 0.9995
"""|cos| above which the two tensors count as colinear and slerp falls back to lerp."""
EPS = 1e-8


def slerp_tensors(t: float, v0: Tensor, v1: Tensor) -> Tensor:
    """Interpolate from ``v0`` (t=0) to ``v1`` (t=1) along the great circle.

    The angle is measured between the flattened, normalized tensors; the result is
    ``sin((1-t)Ω)/sin Ω · v0 + sin(tΩ)/sin Ω · v1`` (the raw, unnormalized tensors,
    as in mergekit). When ``|cos Ω| > 0.9995`` (nearly colinear, also when either
    tensor is ~0) it falls back to ``(1-t) v0 + t v1``.
    """
    a, b = v0.float(), v1.float()
    na, nb = float(a.norm()), float(b.norm())
    ua = a / na if na > EPS else a
    ub = b / nb if nb > EPS else b
    dot = float((ua * ub).sum())
    if abs(dot) > DOT_THRESHOLD or na <= EPS or nb <= EPS:
        return (1 - t) * a + t * b
    omega = math.acos(max(-1.0, min(1.0, dot)))
    s = math.sin(omega)
    return (math.sin((1 - t) * omega) / s) * a + (math.sin(t * omega) / s) * b


@register_method(
    "slerp",
    paper="https://doi.org/10.1145/325165.325242",
    summary="spherical interpolation between 2 models (base→model, or model 1→model 2)",
    params=(
        OpenParam("t", "global", default=None, ge=0.0, le=1.0, doc="0 = first end, 1 = second"),
    ),
    needs_base=False,
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
