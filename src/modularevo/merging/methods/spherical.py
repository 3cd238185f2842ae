"""Spherical merges of several models: ``nuslerp``, ``multislerp`` and ``karcher``.

All three treat each (flattened) tensor as a point on a hypersphere, as mergekit 0.1.5
defines them; the same float32 operations are used, so deterministic inputs give
mergekit's bits:

* ``nuslerp`` (mergekit's "NuSLERP"): SLERP between two models at ``t = w_2 / (w_1 + w_2)``,
  over the whole tensor (``nuslerp_flatten``, default), per row, or per column; with a
  base, between the two task vectors, added back to the base.
* ``multislerp`` (https://goddard.blog/posts/multislerp-wow-what-a-cool-idea): weighted
  barycentre of K points on the sphere through the tangent space at their normalized
  weighted mean, scaled by the weighted mean norm; with a base, of the task vectors.
* ``karcher`` (the Karcher / Riemannian mean, https://arxiv.org/abs/2603.04972): the
  equal-weight Fréchet mean on the unit sphere by fixed-point iteration, scaled by the
  mean norm.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from modularevo.errors import InputError
from modularevo.merging.methods._params import (
    IntParam,
    OpenParam,
    flag_param,
    resolve_params,
    weight_param,
)
from modularevo.merging.spec import register_method
from modularevo.utils.lazy import LazyModule

if TYPE_CHECKING:
    import torch
    from torch import Tensor
else:
    torch = LazyModule("torch")


def nuslerp_tensors(t: float, v0: Tensor, v1: Tensor, *, dim: int = -1,
                    flatten: bool = False, eps: float = 1e-8) -> Tensor:  # fmt: skip
    """SLERP from ``v0`` (t=0) to ``v1`` (t=1) per vector along ``dim`` (or flattened).

    Vectors are normalized with norms clamped to at least 1e-7; pairs with
    ``1 − cos² ≤ eps²`` (colinear) are interpolated linearly.
    """
    shape = v0.shape
    if flatten:
        v0, v1 = v0.reshape(-1), v1.reshape(-1)
    elif dim != -1:
        v0, v1 = v0.transpose(dim, -1), v1.transpose(dim, -1)
    u0 = v0 / torch.norm(v0, dim=-1, keepdim=True).clamp(min=1e-7)
    u1 = v1 / torch.norm(v1, dim=-1, keepdim=True).clamp(min=1e-7)
    cos = torch.sum(u0 * u1, dim=-1, keepdim=True).clamp(-1, 1)
    colinear = (1 - cos.square()) <= eps**2
    theta = torch.acos(torch.where(colinear, 0, cos))
    out = (torch.sin((1 - t) * theta) * v0 + torch.sin(t * theta) * v1) / torch.sin(theta)
    out = torch.where(colinear, (1 - t) * v0 + t * v1, out)
    if dim != -1 and not flatten:
        out = out.transpose(dim, -1)
    return out.reshape(shape)


@register_method(
    "nuslerp",
    paper="https://github.com/arcee-ai/mergekit/blob/main/docs/merge_methods.md",
    summary="SLERP of 2 models (or their task vectors) at t = w2/(w1+w2); whole tensor or per row",
    params=(
        weight_param("relative weight; t = w_2 / (w_1 + w_2) (0.5 if the sum is ~0)"),
        flag_param(
            "nuslerp_row_wise",
            False,
            "interpolate each column vector (dim 0) instead of each row, when not flattened",
        ),
        flag_param("nuslerp_flatten", True, "interpolate the tensor as one vector"),
    ),
    needs_base=False,
    optional_base=True,
    min_models=2,
    max_models=2,
)
def nuslerp(
    tensors: Sequence[Tensor],
    base: Tensor | None = None,
    *,
    generators: Any = None,
    masks: Any = None,
    thresholds: Any = None,
    **params: Any,
) -> Tensor:
    """NuSLERP of two models (mergekit 0.1.5's ``nuslerp``); with a base, of their task
    vectors, added back to the base."""
    p = resolve_params("nuslerp", params, len(tensors))
    w = p["weight"]
    total = sum(w)
    t = 0.5 if abs(total) < 1e-6 else w[1] / total
    a, b = tensors[0].float(), tensors[1].float()
    kw = {"dim": 0 if p["nuslerp_row_wise"] else -1, "flatten": p["nuslerp_flatten"]}
    if base is None:
        return nuslerp_tensors(t, a, b, **kw)
    b0 = base.float()
    return b0 + nuslerp_tensors(t, a - b0, b - b0, **kw)


@register_method(
    "multislerp",
    paper="https://goddard.blog/posts/multislerp-wow-what-a-cool-idea",
    summary="weighted barycentre of K models (or task vectors) on the hypersphere",
    params=(
        weight_param("weight of this model in the barycentre"),
        flag_param("normalize_weights", True, "divide the weights by their sum"),
        OpenParam("eps", "global", default=1e-8, gt=0.0, doc="numerical floor of norms"),
    ),
    needs_base=False,
    optional_base=True,
    min_models=1,
)
def multislerp(
    tensors: Sequence[Tensor],
    base: Tensor | None = None,
    *,
    generators: Any = None,
    masks: Any = None,
    thresholds: Any = None,
    **params: Any,
) -> Tensor:
    """Multi-SLERP (mergekit 0.1.5's ``multislerp``).

    Raises:
        InputError: three or more task vectors whose weighted unit mean is ~0
            (e.g. ``a`` and ``-a`` at equal weights); two fall back to a weighted sum.
    """
    p = resolve_params("multislerp", params, len(tensors))
    if len(tensors) == 1:
        return tensors[0].float().clone()
    eps = float(p["eps"])
    stacked = torch.stack([t.float() for t in tensors], dim=0)
    if base is not None:
        stacked -= base.float()
    flat = stacked.view(stacked.shape[0], -1)
    w = torch.tensor(p["weight"], dtype=torch.float32)
    if p["normalize_weights"]:
        w = w / w.sum()
    norms = torch.norm(flat, dim=-1, keepdim=True)
    units = flat / (norms + eps)
    mean = (units * w.view(-1, 1)).sum(0)
    mean_norm = torch.norm(mean)
    if base is not None and bool((norms < eps).all()):
        return base.float().clone()  # no model changes this tensor (mergekit raises here)
    if mean_norm < eps:
        if stacked.shape[0] != 2:
            raise InputError(
                "multislerp: the weighted mean of the unit task vectors is zero (opposite "
                "vectors with balancing weights); change the weights"
            )
        out = (stacked[0] * w[0] + stacked[1] * w[1]).view(stacked.shape[1:])
        return out + base.float() if base is not None else out
    mean = mean / mean_norm
    dots = (units * mean).sum(-1, keepdim=True)
    tangent = ((units - dots * mean) * w.view(-1, 1)).sum(0)
    tnorm = torch.norm(tangent) + eps
    out = mean * torch.cos(tnorm) + tangent * (torch.sin(tnorm) / tnorm)
    out = (out * (norms.squeeze(-1) * w).sum()).view(stacked.shape[1:])
    return out + base.float() if base is not None else out


def karcher_mean(tensors: Sequence[Tensor], *, max_iter: int = 10, tol: float = 1e-5) -> Tensor:
    """Equal-weight Karcher mean on the unit sphere, scaled by the mean norm.

    Starts at the normalized Euclidean mean of the unit tensors and takes up to
    ``max_iter`` Riemannian gradient steps, stopping when the tangent norm is below
    ``tol``; tensors with norm ≤ ``tol`` are left out of the direction (they still
    count in the scale). All zero: zeros.
    """
    xs = [t.float() for t in tensors]
    alphas = [1.0 / len(xs)] * len(xs)
    norms = [torch.linalg.vector_norm(x) for x in xs]
    units = [
        torch.zeros_like(x) if n.item() == 0.0 else x / n for x, n in zip(xs, norms, strict=True)
    ]
    valid = [i for i, n in enumerate(norms) if n.item() > tol]
    if not valid:
        return torch.zeros_like(xs[0])
    total = sum(alphas[i] for i in valid)
    va = [alphas[i] / total for i in valid]
    vu = [units[i] for i in valid]
    mean = torch.zeros_like(vu[0])
    for a, u in zip(va, vu, strict=True):
        mean += a * u
    mnorm = torch.linalg.vector_norm(mean)
    mean = vu[0].clone() if mnorm.item() < tol else mean / mnorm
    for _ in range(max_iter):
        tangent = torch.zeros_like(mean)
        for a, u in zip(va, vu, strict=True):
            dot = torch.clamp(torch.dot(mean.flatten(), u.flatten()), -1.0, 1.0)
            theta = torch.arccos(dot)
            if theta.item() < tol:
                continue
            tangent += a * (theta / torch.sin(theta)) * (u - dot * mean)
        tnorm = torch.linalg.vector_norm(tangent)
        if tnorm.item() < tol:
            break
        mean = torch.cos(tnorm) * mean + torch.sin(tnorm) * (tangent / tnorm)
        unorm = torch.linalg.vector_norm(mean)
        if unorm.item() > tol:
            mean = mean / unorm
    scale = sum(a * n for a, n in zip(alphas, norms, strict=True))
    return scale * mean


@register_method(
    "karcher",
    paper="https://arxiv.org/abs/2603.04972",
    summary="equal-weight Karcher (Riemannian) mean of K models on the hypersphere",
    params=(
        IntParam("max_iter", "global", default=10, ge=1, doc="fixed-point iterations at most"),
        OpenParam("tol", "global", default=1e-5, gt=0.0, doc="stop when the step is below"),
    ),
    needs_base=False,
    min_models=1,
)
def karcher(
    tensors: Sequence[Tensor],
    base: Tensor | None = None,
    *,
    generators: Any = None,
    masks: Any = None,
    thresholds: Any = None,
    **params: Any,
) -> Tensor:
    """Karcher mean of the models (mergekit 0.1.5's ``karcher``); like ``linear``, a base
    model is averaged in when it is listed under ``models``."""
    p = resolve_params("karcher", params, len(tensors))
    if len(tensors) == 1:
        return tensors[0].float().clone()
    return karcher_mean(tensors, max_iter=int(p["max_iter"]), tol=float(p["tol"]))
