"""``cabs``: Conflict-Aware and Balanced Sparsification over K ≥ 2 task vectors.

Paper: Yang et al., "CABS: Conflict-Aware and Balanced Sparsification for Enhancing
Model Merging" (ICML 2025), https://arxiv.org/abs/2503.01874

Each task vector is n:m-pruned (balanced: the same density in every block of m
consecutive entries), in a configurable order; a later task can only keep positions
that no earlier task kept (conflict-aware), so the kept supports are pairwise
disjoint::

    taken = ∅
    for t in order:  M_t = n:m-top(|τ_t|, only positions ∉ taken);  taken ∪= M_t
    θ = θ_0 + Σ_t w_t (M_t ⊙ τ_t)            (no 1/p rescale: w_t is the only scale)

Fixes to the reference code (METHODS.md §6.25/26):

* any number of tasks K ≥ 2, not exactly two; ``order`` lists model indices
  (default: the given order; the first gets first pick);
* no special branch for ``n ≥ m/2``; instead K·n ≤ m is required (refused with an
  error naming K, n and m): with K·n > m the tasks after the first ⌊m/n⌋ would find
  (almost) no free position in a block and keep an empty or partial mask, silently
  dropping whole tasks (e.g. 4 tasks at n:m = 4:8 leave tasks 3 and 4 empty).
  :func:`cabs_masks` itself keeps every free position when fewer than ``n`` remain;
* a trailing partial block of ``r = numel mod m`` entries keeps ``round(n·r/m)``
  (halves up) instead of being silently dropped or rejected.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from modularevo.merging.methods._params import (
    IndexListParam,
    IntParam,
    resolve_params,
    weight_param,
)
from modularevo.merging.sparsify import nm_mask
from modularevo.merging.spec import register_method
from modularevo.utils.lazy import LazyModule

if TYPE_CHECKING:
    import torch
    from torch import Tensor
else:
    torch = LazyModule("torch")


def resolve_order(order: Sequence[int] | None, num_models: int) -> list[int]:
    """The processing order: ``order`` if given (a permutation of ``0..K-1``), else 0..K-1.

    Raises:
        ValueError: ``order`` is not a permutation of the model indices.
    """
    if not order:
        return list(range(num_models))
    if sorted(order) != list(range(num_models)):
        raise ValueError(
            f"cabs order {list(order)} must list every model index 0..{num_models - 1} once"
        )
    return list(order)


def cabs_masks(deltas: Sequence[Tensor], n: int, m: int, order: Sequence[int]) -> list[Tensor]:
    """The kept-position masks of each task vector (pairwise disjoint, n:m per block).

    Args:
        deltas: K task vectors of one tensor.
        n, m: keep at most ``n`` of every ``m`` consecutive entries per task.
        order: the processing order (model indices).

    Returns:
        K bool masks, indexed like ``deltas``.
    """
    taken = torch.zeros_like(deltas[0], dtype=torch.bool)
    masks: list[Tensor] = [taken] * len(deltas)
    for i in order:
        mask = nm_mask(deltas[i].abs(), n, m, available=~taken)
        masks[i] = mask
        taken = taken | mask
    return masks


def _too_dense(k: int, n: int, m: int) -> str:
    return (
        f"cabs with K={k} models and n:m = {n}:{m} needs K*n <= m, but K*n = {k * n} > {m}: "
        f"models after the first {m // n} would keep empty masks; use n <= {max(1, m // k)} "
        f"or a block m >= {k * n}"
    )


def _validate(params: Mapping[str, Any], num_models: int) -> list[str]:
    problems = []
    n, m = params.get("n"), params.get("m")
    if isinstance(n, int) and isinstance(m, int) and n > m:
        problems.append(f"cabs needs n <= m, found n={n}, m={m}; e.g. n: 64, m: 256")
    elif isinstance(n, int) and isinstance(m, int) and num_models * n > m:
        problems.append(_too_dense(num_models, n, m))
    order = params.get("order") or []
    if order and sorted(order) != list(range(num_models)):
        problems.append(
            f"cabs order {list(order)} must list every model index 0..{num_models - 1} "
            "exactly once (or be left out for the given order)"
        )
    return problems


@register_method(
    "cabs",
    paper="https://arxiv.org/abs/2503.01874",
    summary="sequential n:m pruning of K task vectors on disjoint supports, then Σ w_t τ'_t",
    params=(
        weight_param(),
        IntParam("n", "global", default=None, ge=1, doc="entries kept per block of m"),
        IntParam("m", "global", default=None, ge=1, doc="block length"),
        IndexListParam("order", "global", default=(), doc="model indices, first gets first pick"),
    ),
    min_models=2,
    validate=_validate,
)
def cabs(
    tensors: Sequence[Tensor],
    base: Tensor,
    *,
    generators: Any = None,
    masks: Any = None,
    thresholds: Any = None,
    **params: Any,
) -> Tensor:
    """``θ_0 + Σ_t w_t (M_t ⊙ τ_t)`` with CABS masks (see the module docstring)."""
    p = resolve_params("cabs", params, len(tensors))
    n, m = int(p["n"]), int(p["m"])
    if n > m:
        raise ValueError(f"cabs needs n <= m, got n={n}, m={m}")
    if len(tensors) * n > m:
        raise ValueError(_too_dense(len(tensors), n, m))
    base32 = base.float()
    deltas = [t.float() - base32 for t in tensors]
    kept = cabs_masks(deltas, n, m, resolve_order(p["order"], len(tensors)))
    out = base32.clone()
    for w, d, mask in zip(p["weight"], deltas, kept, strict=True):
        out += w * torch.where(mask, d, torch.zeros_like(d))
    return out
