"""Generalized task arithmetic: sparsify × sign consensus × weights × normalize × λ.

One engine, several registered configurations (as in mergekit, whose parameter names,
defaults and order of operations are followed so recipes give the same tensors)::

    τ_t   = θ_t − θ_0
    τ'_t  = sparsify(τ_t)                                  (per model, per tensor)
    m     = Σ_t w_t τ'_t [· agree_t]                       (agree: elected sign, TIES)
    m     = m / Σ_t w_t [· agree_t]        if normalize    (divisor 0 → 1)
    θ     = θ_0 + λ · m

========================  ============  =========  =========  =========
name                      sparsify      consensus  normalize  rescale
========================  ============  =========  =========  =========
``task_arithmetic``       —             —          false      —
``ties``                  magnitude     sum        **true**   false
``dare_linear``           random        —          false      true (L1)
``dare_ties``             random        sum        false      true (L1)
``breadcrumbs``           outliers      —          false      false
``breadcrumbs_ties``      outliers      sum        false      false
``della``                 MagPrune      sum        **true**   true (L1)
``della_linear``          MagPrune      —          false      true (L1)
========================  ============  =========  =========  =========

Defaults mirror mergekit 0.1.5: TIES and DELLA divide by the sum of the agreeing
weights (a weighted disjoint mean; with all weights 1 this is the TIES paper's
disjoint mean); the others do not normalize. ``lambda`` (default 1) scales the merged
delta last. ``rescale: true`` matches each sparsified tensor's L1 norm to its
unsparsified one, for every sparsifier, as mergekit has done since v0.1.0. The random
sparsifiers (DARE, DELLA) also take ``rescale: inverse_p``: divide each survivor by
its keep probability (1/density for DARE, 1/p_i for DELLA), the papers' unbiased
choice; ``rescale: l1`` is a synonym of ``true``.

Reproducing the reference codes: MergeLM TIES = ``ties`` with weights 1 and
``lambda`` = its scaling coefficient. ModularEvo's TIES multiplies λ_t *before* the
election and divides by the *count* of agreeing models (METHODS.md §6.8):
m = Σ_agree λ_t τ'_t / #agree. No setting of ``ties`` gives that for unequal λ_t:
``weight: λ_t`` with ``normalize: true`` divides by Σ_agree λ_t instead, which cancels
λ altogether when the λ_t are equal (the result no longer depends on λ), and
``normalize: false`` does not divide at all. With one λ for every task the reference
equals ``weight: 1`` (all), ``normalize: true``, ``lambda: λ``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from modularevo.merging import sparsify as sp
from modularevo.merging.consensus import merge_deltas
from modularevo.merging.methods._params import (
    INT8_MASK,
    OpenParam,
    RescaleParam,
    density_param,
    flag_param,
    resolve_params,
    weight_param,
)
from modularevo.merging.spec import Capabilities, MergeFn, Param, as_float32, register_method
from modularevo.utils.lazy import LazyModule

if TYPE_CHECKING:
    import torch
    from torch import Tensor
else:
    torch = LazyModule("torch")

Sparsifier = Literal["magnitude", "random", "outliers", "della"]

LAMBDA = OpenParam("lambda", "global", default=1.0, doc="scale of the merged task vector")
GAMMA = OpenParam(
    "gamma", "per_model", default=0.01, ge=0.0, lt=1.0, doc="fraction of largest |τ| removed"
)
EPSILON = OpenParam(
    "epsilon", "per_model", default=0.15, ge=0.0, lt=0.5,
    doc="keep-probability spread: p in [density-ε, density+ε] by magnitude rank",
)  # fmt: skip
TRIM_SCOPE = Param(
    "trim_scope", "global", default="tensor", choices=("tensor", "global"),
    doc="tensor: trim each tensor to density; global: one |τ| threshold per model",
)  # fmt: skip


@dataclass(frozen=True)
class GTAVariant:
    """One configured instance of generalized task arithmetic."""

    name: str
    paper: str
    summary: str
    sparsifier: Sparsifier | None
    consensus: Literal["sum"] | None
    normalize: bool
    rescale: bool


def _params(v: GTAVariant) -> tuple[Param, ...]:
    ps: list[Param] = [weight_param()]
    if v.sparsifier is not None:
        ps.append(density_param())
    if v.sparsifier == "outliers":
        ps.append(GAMMA)
    if v.sparsifier == "della":
        ps.append(EPSILON)
    ps += [LAMBDA, flag_param("normalize", v.normalize, "divide by the sum of weights")]
    if v.sparsifier in ("random", "della"):
        ps.append(RescaleParam(
            "rescale", "global", default=v.rescale,
            doc="rescale survivors: true/l1 = match the L1 norm (mergekit), "
            "inverse_p = divide by the keep probability (the paper), false = no",
        ))  # fmt: skip
    elif v.sparsifier is not None:
        ps.append(flag_param("rescale", v.rescale, "rescale survivors (match the L1 norm)"))
    if v.sparsifier == "magnitude":
        ps.append(TRIM_SCOPE)
    ps.append(INT8_MASK)
    return tuple(ps)


def _sparsify(
    v: GTAVariant,
    delta: Tensor,
    i: int,
    p: Mapping[str, Any],
    generators: Sequence[torch.Generator] | None,
    thresholds: Sequence[float | sp.Cut] | None,
) -> Tensor:
    gen = generators[i] if generators is not None else None
    d, rescale = p["density"][i], p["rescale"]
    if v.sparsifier == "magnitude":
        if p["trim_scope"] == "global":
            raise ValueError(f"{v.name} with trim_scope 'global' needs thresholds")
        return sp.magnitude(delta, d, rescale=rescale)
    if v.sparsifier == "random":
        return sp.random_drop(delta, d, gen, rescale=rescale)
    if v.sparsifier == "outliers":
        return sp.magnitude_outliers(delta, d, p["gamma"][i], rescale=rescale)
    return sp.della_magprune(delta, d, p["epsilon"][i], gen, rescale=rescale)


def generalized_task_arithmetic(
    v: GTAVariant,
    tensors: Sequence[Tensor],
    base: Tensor,
    params: Mapping[str, Any],
    generators: Sequence[torch.Generator] | None = None,
    thresholds: Sequence[float | sp.Cut] | None = None,
) -> Tensor:
    """Merge one tensor with variant ``v`` (formula: module docstring), in place on its
    own float32 temporaries (a delta buffer, or a ``(K, *shape)`` stack for consensus).

    Args:
        v: the configured variant.
        tensors: K fine-tuned tensors; base: the base tensor.
        params: the method's parameters (missing ones take their defaults).
        generators: K generators (random sparsifiers).
        thresholds: K magnitude cuts (magnitude sparsifier only): floats for
            ``trim_scope: global`` (keep ``|τ| >= t``), or exact per-tensor
            :class:`~modularevo.merging.sparsify.Cut` s from the executor's chunked
            top-k; without them the trim is computed on the whole tensor.
    """
    p = resolve_params(v.name, params, len(tensors))
    if v.sparsifier is None and v.consensus is None:
        return _weighted_task_sum(tensors, as_float32(base), p)
    base32 = base.float()
    weights: list[float] = p["weight"]
    if v.consensus is None:
        mixed = torch.zeros_like(base32)
        buf = torch.empty_like(base32)
        for i, t in enumerate(tensors):
            delta = _delta(v, t, base32, i, p, generators, thresholds, buf)
            mixed.add_(delta, alpha=weights[i])
        del buf
        if p["normalize"]:
            total = sum(weights)
            mixed /= 1.0 if abs(total) < 1e-8 else total
    else:
        stacked = torch.empty(
            (len(tensors), *base32.shape), dtype=torch.float32, device=base32.device
        )
        for i, t in enumerate(tensors):
            delta = _delta(v, t, base32, i, p, generators, thresholds, stacked[i])
            torch.mul(delta, weights[i], out=stacked[i])
        w = torch.tensor(weights, dtype=torch.float32, device=base32.device)
        mixed = merge_deltas(
            stacked, w, consensus=v.consensus, normalize=p["normalize"], inplace=True
        )
    if p["lambda"] != 1:
        mixed *= p["lambda"]
    return mixed.add_(base32)


def _weighted_task_sum(tensors: Sequence[Tensor], base32: Tensor, p: Mapping[str, Any]) -> Tensor:
    """``θ_0 + λ Σ_t w_t (θ_t − θ_0)`` (÷ Σ w_t if ``normalize``), with operators only.

    The same float32 operations in the same order on torch tensors and numpy
    arrays, so both backends of the executor write the same bytes (no fused
    multiply-add: ``torch.add(alpha=)`` would round differently from numpy).
    """
    weights: list[float] = p["weight"]
    mixed = None
    for w, t in zip(weights, tensors, strict=True):
        delta = as_float32(t) - base32
        if w != 1:
            delta *= w
        if mixed is None:
            mixed = delta
        else:
            mixed += delta
    assert mixed is not None
    if p["normalize"]:
        total = sum(weights)
        mixed /= 1.0 if abs(total) < 1e-8 else total
    if p["lambda"] != 1:
        mixed *= p["lambda"]
    mixed += base32
    return mixed


def _delta(
    v: GTAVariant,
    t: Tensor,
    base32: Tensor,
    i: int,
    p: Mapping[str, Any],
    generators: Sequence[torch.Generator] | None,
    thresholds: Sequence[float | sp.Cut] | None,
    out: Tensor,
) -> Tensor:
    """``sparsify(t - base)`` for model ``i``; written into ``out`` when possible."""
    delta = torch.sub(t.float(), base32, out=out)
    if v.sparsifier is None:
        return delta
    if v.sparsifier == "magnitude" and (
        thresholds is not None or (p["trim_scope"] == "tensor" and p["density"][i] >= 1)
    ):
        if thresholds is None:
            return delta  # density 1 keeps everything
        if p["rescale"]:
            return sp.threshold_prune(delta, thresholds[i], rescale=True)
        return sp.cut_prune(delta, thresholds[i], out=delta)  # in place
    return _sparsify(v, delta, i, p, generators, thresholds)


def _validate(v: GTAVariant) -> Any:
    def check(params: Mapping[str, Any], num_models: int) -> list[str]:
        if v.sparsifier != "della":
            return []
        problems = []
        dens = _as_list(params.get("density", 1.0), num_models)
        eps = _as_list(params.get("epsilon", 0.15), num_models)
        for i, (d, e) in enumerate(zip(dens, eps, strict=True)):
            if 0 < d < 1 and not (d - e > 0 and d + e < 1):
                problems.append(
                    f"model {i}: della needs 0 < density - epsilon and density + epsilon < 1, "
                    f"found density={d}, epsilon={e}; lower epsilon or move density"
                )
        return problems

    return check


def _global_trim_is_elementwise(params: Mapping[str, Any]) -> bool:
    """TIES with fixed thresholds and no L1 rescale acts entry by entry."""
    return params.get("trim_scope") == "global" and not params.get("rescale", False)


def _per_tensor_trim_is_chunkable(params: Mapping[str, Any]) -> bool:
    """Per-tensor TIES without L1 rescale acts entry by entry once its cuts are known."""
    return params.get("trim_scope", "tensor") == "tensor" and not params.get("rescale", False)


def _as_list(value: Any, k: int) -> list[float]:
    return list(value) if isinstance(value, (list, tuple)) else [value] * k


def _register(v: GTAVariant) -> MergeFn:
    def fn(
        tensors: Sequence[Tensor],
        base: Tensor,
        *,
        generators: Sequence[torch.Generator] | None = None,
        masks: Any = None,
        thresholds: Sequence[float | sp.Cut] | None = None,
        **params: Any,
    ) -> Tensor:
        return generalized_task_arithmetic(v, tensors, base, params, generators, thresholds)

    fn.__name__ = v.name
    fn.__qualname__ = v.name
    fn.__doc__ = f"{v.summary}\n\nPaper: {v.paper}\n\nSee :mod:`{__name__}`."
    is_random = v.sparsifier in ("random", "della")
    caps = Capabilities()
    if v.sparsifier is None:
        caps = Capabilities(elementwise=True, numpy=v.consensus is None)
    if v.sparsifier == "magnitude":
        caps = Capabilities(
            elementwise=_global_trim_is_elementwise,
            topk_cuts=_per_tensor_trim_is_chunkable,
            needs_thresholds=lambda params: params.get("trim_scope") == "global",
        )
    flags = dict(
        randomized=is_random,
        global_stats=v.sparsifier == "magnitude",
        capabilities=caps,
        validate=_validate(v),
    )
    return register_method(v.name, paper=v.paper, summary=v.summary, params=_params(v), **flags)(fn)


_TA = "https://arxiv.org/abs/2212.04089"
_TIES = "https://arxiv.org/abs/2306.01708"
_DARE = "https://arxiv.org/abs/2311.03099"
_BREAD = "https://arxiv.org/abs/2312.06795"
_DELLA = "https://arxiv.org/abs/2406.11617"

VARIANTS: tuple[GTAVariant, ...] = (
    GTAVariant("task_arithmetic", _TA, "θ0 + λ Σ w_t τ_t", None, None, False, False),
    GTAVariant(
        "ties", _TIES, "trim by magnitude, elect sign, disjoint mean", "magnitude", "sum",
        True, False,
    ),
    GTAVariant("dare_linear", _DARE, "random drop + rescale, then sum", "random", None, False,
               True),
    GTAVariant("dare_ties", _DARE, "random drop + rescale, then TIES consensus", "random",
               "sum", False, True),
    GTAVariant("breadcrumbs", _BREAD, "drop largest γ and smallest |τ|, then sum", "outliers",
               None, False, False),
    GTAVariant("breadcrumbs_ties", _BREAD, "breadcrumbs sparsity with TIES consensus",
               "outliers", "sum", False, False),
    GTAVariant("della", _DELLA, "MagPrune (rank-based drop) + TIES consensus, weighted mean",
               "della", "sum", True, True),
    GTAVariant("della_linear", _DELLA, "MagPrune (rank-based drop), then sum", "della", None,
               False, True),
)  # fmt: skip

for _v in VARIANTS:
    _register(_v)
