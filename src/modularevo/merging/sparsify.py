"""Sparsifiers for task vectors: pure functions ``delta -> sparser delta``.

Every function computes in float32, never modifies its input and, when random,
draws only from the ``generator`` it is given (so results are reproducible and
independent of the order of work).

Which entries the magnitude trims keep (keep counts as mergekit's, ties towards the lower
flat index) is decided in :mod:`modularevo.merging.selection`; its public names are
re-exported here.
"""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING, Literal

from modularevo.merging.selection import (
    Cut,
    cut_mask,
    global_threshold,
    keep_count,
    kth_largest,
    nm_mask,
    topk_mask,
)
from modularevo.utils.lazy import LazyModule

if TYPE_CHECKING:
    import torch
    from torch import Tensor
else:
    torch = LazyModule("torch")


__all__ = [
    "Cut",
    "cut_mask",
    "cut_prune",
    "della_magprune",
    "global_threshold",
    "keep_count",
    "kth_largest",
    "l1_rescale",
    "magnitude",
    "magnitude_outliers",
    "nm_mask",
    "random_drop",
    "rescale_mode",
    "threshold_prune",
    "topk_mask",
]


RescaleMode = Literal["l1", "inverse_p"]
"""How a sparsifier rescales the entries it keeps: ``l1`` matches the tensor's L1 norm
(mergekit's ``rescale: true`` for every sparsifier since v0.1.0); ``inverse_p`` divides
each kept entry by its keep probability (the DARE and DELLA papers' unbiased choice)."""

_L1_EPS = 1e-7


def rescale_mode(rescale: bool | str | None) -> RescaleMode | None:
    """The rescale mode a recipe value names: ``true``/``"l1"`` → ``l1``, ``"inverse_p"``,
    ``false``/``None`` → no rescale.

    Raises:
        ValueError: any other value.
    """
    if rescale is True or rescale == "l1":
        return "l1"
    if rescale is False or rescale is None:
        return None
    if rescale == "inverse_p":
        return "inverse_p"
    raise ValueError(f"rescale must be true, false, 'l1' or 'inverse_p', got {rescale!r}")


def l1_rescale(original: Tensor, kept: Tensor) -> Tensor:
    """Scale ``kept`` so its L1 norm matches ``original`` (mergekit 0.1.5's
    ``rescaled_masked_tensor`` with the L1 norm). Unchanged when either norm is
    below 1e-7 (mergekit's eps)."""
    before = original.abs().sum()
    after = kept.abs().sum()
    if before < _L1_EPS or after < _L1_EPS:
        return kept
    return kept * (before / after)


def magnitude(delta: Tensor, density: float, *, rescale: bool = False) -> Tensor:
    """Keep the ``int(density * numel)`` largest-magnitude entries of one tensor (TIES trim).

    Args:
        delta: task vector of one tensor.
        density: fraction kept, in (0, 1]; 1 returns an unchanged copy.
        rescale: match the L1 norm of ``delta`` afterwards (mergekit ``rescale: true``).

    At least one entry is kept for any positive density (:func:`keep_count`).
    """
    delta = delta.float()
    if density >= 1:
        return delta.clone()
    kept = delta * topk_mask(delta.abs(), keep_count(density, delta.numel()))
    return l1_rescale(delta, kept) if rescale else kept


def cut_prune(delta: Tensor, cut: Cut | float, *, out: Tensor | None = None) -> Tensor:
    """``delta`` with the entries ``cut`` drops set to 0, in one fused pass.

    Equals ``delta * cut_mask(delta.abs(), cut)`` up to the sign of zeros: a hard
    shrink keeps ``|delta| > value``; for ``>=`` (every tie kept, or the flat positions
    up to ``last_tie``) it shrinks by the float just below ``value`` instead.

    Args:
        delta: the task vector (float32, or cast to it).
        cut: what to keep (a float: ``|delta| >= it``).
        out: float32 tensor of ``delta``'s shape to write into (may be ``delta`` itself);
            by default a new tensor.
    """
    c = cut if isinstance(cut, Cut) else Cut(float(cut))
    delta = delta.float()
    out = torch.empty_like(delta) if out is None else out
    flat, dst = delta.reshape(-1), out.view(-1)
    if c.last_tie == sys.maxsize:  # keep |delta| >= value
        if c.value <= 0:
            return out.copy_(delta)
        if c.value == math.inf:
            return out.zero_()
        torch.ops.aten.hardshrink.out(flat, _below(c.value), out=dst)
        return out
    # ties kept up to flat position last_tie: >= before it, > after it (no index tensor)
    t = max(0, min(c.last_tie + 1, flat.numel()))
    if t:
        torch.ops.aten.hardshrink.out(flat[:t], _below(c.value), out=dst[:t])
    torch.ops.aten.hardshrink.out(flat[t:], c.value, out=dst[t:])
    return out


def _below(value: float) -> float:
    """The float32 just below ``value``: ``|x| > _below(v)`` iff ``|x| >= v`` (float32 x)."""
    return float(torch.nextafter(torch.tensor(value), torch.tensor(-math.inf)))


def threshold_prune(delta: Tensor, threshold: float | Cut, *, rescale: bool = False) -> Tensor:
    """Keep the entries of ``delta`` that ``threshold`` keeps (a float: ``|delta| >= it``).

    TIES' global per-model trim passes one float per model (computed by the executor
    over all merged tensors); the executor's chunked per-tensor trim passes exact
    :class:`Cut` s, which give the same entries as :func:`magnitude`.
    """
    delta = delta.float()
    kept = delta * cut_mask(delta.abs(), threshold)
    return l1_rescale(delta, kept) if rescale else kept


def random_drop(
    delta: Tensor,
    density: float,
    generator: torch.Generator | None,
    *,
    rescale: bool | str | None = "inverse_p",
) -> Tensor:
    """DARE: keep each entry with probability ``density``, then rescale the survivors.

    Args:
        delta: task vector of one tensor.
        density: keep probability p in [0, 1]; 1 returns an unchanged copy (no draw),
            0 zeros (no draw).
        generator: this model's random stream (required when ``0 < density < 1``).
        rescale: ``inverse_p`` divides by ``density`` (the DARE paper: the expectation
            equals ``delta``); ``l1`` or ``True`` matches the L1 norm of ``delta``
            (mergekit 0.1.5's ``rescale: true``); ``False``/``None`` keeps the values.
    """
    delta = delta.float()
    mode = rescale_mode(rescale)
    if density >= 1:
        return delta.clone()
    if density <= 0:
        return torch.zeros_like(delta)
    if generator is None:
        raise ValueError("random_drop needs a torch.Generator when density < 1")
    keep = torch.rand(delta.shape, generator=generator, device=delta.device) < density
    kept = torch.where(keep, delta, torch.zeros_like(delta))
    if mode == "inverse_p":
        return kept / density
    return l1_rescale(delta, kept) if mode == "l1" else kept


def magnitude_outliers(
    delta: Tensor, density: float, gamma: float, *, rescale: bool = False
) -> Tensor:
    """Model Breadcrumbs: drop the largest ``gamma`` fraction and the smallest entries.

    With ``n = numel``: ``n_top = int(gamma*n)`` largest-magnitude entries are removed,
    then the smallest so that ``int(density*n)`` remain. When ``density + gamma > 1``
    fewer large entries are removed so the target count still holds (mergekit's rule).

    The same entries as mergekit 0.1.5, which keeps ``[n_bot : n_bot + target]`` of
    the ascending order (mergekit before 0.1.5 sliced ``[n_bot:-n_top]`` and kept
    nothing when ``n_top == 0``).
    """
    delta = delta.float()
    if density >= 1:
        return delta.clone()
    n = delta.numel()
    target = max(0, min(n, int(density * n)))  # no minimum of 1 here, as in mergekit 0.1.5
    n_top = int(gamma * n)
    n_bot = n - target - n_top
    if n_bot < 0:
        n_top += n_bot
        n_bot = 0
    order = torch.sort(delta.abs().reshape(-1), stable=True).indices
    mask = torch.zeros(n, dtype=torch.bool, device=delta.device)
    mask[order[n_bot : n - n_top]] = True
    kept = torch.where(mask.reshape(delta.shape), delta, torch.zeros_like(delta))
    return l1_rescale(delta, kept) if rescale else kept


def della_magprune(
    delta: Tensor,
    density: float,
    epsilon: float,
    generator: torch.Generator | None,
    *,
    rescale: bool | str | None = "inverse_p",
) -> Tensor:
    """DELLA MagPrune: rank-based keep probabilities per row, then rescale the survivors.

    Within each row (dim 0 is the row axis; the rest is flattened; a 1-D tensor is one
    row) entries are ranked by magnitude, rank r in 0..c-1 (stable on ties). The keep
    probability is ``p = density - epsilon + 2*epsilon * r/(c-1)``: the largest entry
    gets ``density + epsilon``, the smallest ``density - epsilon``, the mean is
    ``density``. Rows of one entry get ``p = density`` (mergekit divides 0/0 there).

    Args:
        rescale: ``inverse_p`` divides each survivor by its own ``p`` (the DELLA paper:
            the expectation equals ``delta``); ``l1`` or ``True`` matches the L1 norm of
            the whole tensor (mergekit 0.1.5's ``rescale: true``); ``False``/``None``
            keeps the values.

    Requires ``0 < density - epsilon`` and ``density + epsilon < 1`` unless
    ``density >= 1`` (unchanged copy, no draw) or ``density <= 0`` (zeros, as mergekit).
    """
    delta = delta.float()
    mode = rescale_mode(rescale)
    if density >= 1:
        return delta.clone()
    if density <= 0:
        return torch.zeros_like(delta)
    if not (density - epsilon > 0 and density + epsilon < 1):
        raise ValueError(
            f"della needs 0 < density - epsilon and density + epsilon < 1, "
            f"got density={density}, epsilon={epsilon}"
        )
    if generator is None:
        raise ValueError("della_magprune needs a torch.Generator when density < 1")
    rows = delta.reshape(delta.shape[0], -1) if delta.dim() >= 2 else delta.reshape(1, -1)
    cols = rows.shape[1]
    order = torch.argsort(rows.abs(), dim=1, stable=True)
    ranks = torch.empty_like(order)
    ar = torch.arange(cols, device=delta.device).expand_as(order)
    ranks.scatter_(1, order, ar)
    rank_norm = ranks.float() / (cols - 1) if cols > 1 else torch.full_like(rows, 0.5)
    probs = (density - epsilon) + rank_norm * (2 * epsilon)
    keep = torch.rand(rows.shape, generator=generator, device=delta.device) < probs
    kept = torch.where(keep, rows, torch.zeros_like(rows))
    if mode == "inverse_p":
        kept = kept / probs
    elif mode == "l1":
        kept = l1_rescale(rows, kept)
    return kept.reshape(delta.shape)
