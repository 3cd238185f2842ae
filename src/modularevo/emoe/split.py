"""Pure tensor core of EMoE: split FFN neurons into equal-size experts, avg-k gates, masks.

EMoE (Qiu et al., "Unlocking Emergent Modularity in Large Language Models",
NAACL 2024, https://arxiv.org/abs/2310.10908) turns a dense FFN into a mixture of
experts without new parameters: the L2-normalised rows of the key matrix W0
(d_ff, d) are clustered into E equal-size groups, each group of neurons is an
expert, and an expert's gate vector is the mean of its (un-normalised) key rows.

Every function here takes and returns tensors: no modules, no IO, no globals.
Randomness comes from an explicit seed.

Example:
    >>> keys = torch.randn(64, 16)  # (d_ff, d)
    >>> labels = balanced_kmeans(normalize_rows(keys), 4, seed=0)
    >>> cluster_sizes(labels, 4).tolist()
    [16, 16, 16, 16]
    >>> perm = expert_permutation(labels, 4)
    >>> avg_k_gates(keys[perm], 4).shape
    torch.Size([4, 16])
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
from torch import Tensor

from modularevo.errors import InputError

log = logging.getLogger(__name__)

AssignMethod = Literal["auto", "lap", "greedy"]
#: Above this many neurons ``"auto"`` uses the greedy assignment; the exact LAP is O(d_ff^3).
LAP_MAX_POINTS = 4096


def normalize_rows(x: Tensor) -> Tensor:
    """Rows of ``x`` (n, d) scaled to unit L2 norm (zero rows stay zero), as detached fp32."""
    x = x.detach().float()
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def check_divisible(d_ff: int, n_experts: int) -> int:
    """The expert size ``d_ff // n_experts``.

    Raises:
        InputError: if ``n_experts`` < 1 or does not divide ``d_ff``, naming the valid choices.
    """
    if n_experts < 1 or d_ff % n_experts:
        divisors = [e for e in range(2, min(d_ff, 256) + 1) if d_ff % e == 0]
        raise InputError(
            f"cannot split an FFN of {d_ff} neurons into {n_experts} equal-size experts: "
            f"{n_experts} does not divide {d_ff}; choose a number of experts that does, "
            f"e.g. one of {divisors[:12]}"
        )
    return d_ff // n_experts


def cluster_sizes(labels: Tensor, n_clusters: int) -> Tensor:
    """How many points each cluster holds: (n_clusters,) int64."""
    return torch.bincount(labels.long(), minlength=n_clusters)


def kmeans_pp_init(points: Tensor, n_clusters: int, *, generator: torch.Generator) -> Tensor:
    """k-means++ seeding: (n_clusters, d) centroids picked from ``points`` (n, d)."""
    n = points.shape[0]
    first = int(torch.randint(n, (1,), generator=generator))
    centroids = [points[first]]
    d2 = (points - points[first]).pow(2).sum(1)  # (n,)
    for _ in range(1, n_clusters):
        probs = d2 / d2.sum() if float(d2.sum()) > 0 else torch.full_like(d2, 1.0 / n)
        idx = int(torch.multinomial(probs, 1, generator=generator))
        centroids.append(points[idx])
        d2 = torch.minimum(d2, (points - points[idx]).pow(2).sum(1))
    return torch.stack(centroids)


def balanced_assign(cost: Tensor, size: int, *, method: AssignMethod = "auto") -> Tensor:
    """Assign each point to a cluster so every cluster gets exactly ``size`` points.

    Args:
        cost: (n, n_clusters) cost of putting point i in cluster c (e.g. squared distance);
            n must equal n_clusters * size.
        size: points per cluster.
        method: ``"lap"`` solves the assignment exactly (Hungarian algorithm on the cost
            matrix with each cluster repeated ``size`` times, needs scipy); ``"greedy"``
            takes (point, cluster) pairs cheapest first while clusters have room;
            ``"auto"`` is ``"lap"`` up to :data:`LAP_MAX_POINTS` points when scipy is present.

    Returns:
        labels (n,) int64.

    Raises:
        InputError: if n != n_clusters * size or the method is unknown.
    """
    n, k = cost.shape
    if n != k * size:
        raise InputError(
            f"balanced assignment of {n} points into {k} clusters of {size} is impossible "
            f"(needs n = clusters x size = {k * size}); pass size = n // clusters"
        )
    if method == "auto":
        method = "lap" if n <= LAP_MAX_POINTS and _has_scipy() else "greedy"
    if method == "lap":
        return _assign_lap(cost, size)
    if method == "greedy":
        return _assign_greedy(cost, size)
    raise InputError(f"unknown assignment method {method!r}; use 'auto', 'lap' or 'greedy'")


def _has_scipy() -> bool:
    try:
        import scipy.optimize  # noqa: F401  # pyright: ignore[reportUnusedImport]
    except ImportError:
        return False
    return True


def _assign_lap(cost: Tensor, size: int) -> Tensor:
    from scipy.optimize import linear_sum_assignment

    wide = cost.double().repeat_interleave(size, dim=1).numpy()  # (n, n): slot j -> cluster j//size
    rows, cols = linear_sum_assignment(wide)
    labels = torch.empty(cost.shape[0], dtype=torch.long)
    labels[torch.from_numpy(rows).long()] = torch.from_numpy(cols).long() // size
    return labels


def _assign_greedy(cost: Tensor, size: int) -> Tensor:
    n, k = cost.shape
    order = torch.argsort(cost.reshape(-1), stable=True).tolist()
    labels = [-1] * n
    room = [size] * k
    left = n
    for flat in order:
        point, cluster = divmod(flat, k)
        if labels[point] < 0 and room[cluster] > 0:
            labels[point] = cluster
            room[cluster] -= 1
            left -= 1
            if left == 0:
                break
    return torch.tensor(labels, dtype=torch.long)


def balanced_kmeans(
    points: Tensor,
    n_clusters: int,
    *,
    seed: int = 0,
    max_iter: int = 100,
    method: AssignMethod = "auto",
) -> Tensor:
    """Equal-size k-means (Lloyd iterations with a size-constrained assignment step).

    Replaces ``k_means_constrained.KMeansConstrained(size_min=size_max=n/E)`` used by the
    EMoE reference code. Deterministic given ``seed``.

    Args:
        points: (n, d) rows to cluster; EMoE passes the L2-normalised FFN keys.
        n_clusters: number of clusters E; must divide n.
        seed: seed of the k-means++ initialisation.
        max_iter: at most this many assignment/update rounds; stops early once the
            assignment no longer changes.
        method: assignment solver, see :func:`balanced_assign`.

    Returns:
        labels (n,) int64 in [0, n_clusters), each value used exactly n / n_clusters times.

    Raises:
        InputError: if n_clusters does not divide n, or is out of range.
    """
    n = points.shape[0]
    if not 1 <= n_clusters <= n:
        raise InputError(f"n_clusters must be in [1, {n}] for {n} points, got {n_clusters}")
    size = check_divisible(n, n_clusters)
    pts = points.detach().float().cpu()
    gen = torch.Generator().manual_seed(seed)
    centroids = kmeans_pp_init(pts, n_clusters, generator=gen)
    labels = torch.full((n,), -1, dtype=torch.long)
    for step in range(max_iter):
        new = balanced_assign(torch.cdist(pts, centroids).pow(2), size, method=method)
        if torch.equal(new, labels):
            log.debug("balanced k-means converged after %d rounds", step)
            break
        labels = new
        centroids = torch.zeros_like(centroids).index_add_(0, labels, pts) / size
    return labels


def inertia(points: Tensor, labels: Tensor, n_clusters: int) -> float:
    """Sum of squared distances of ``points`` (n, d) to their cluster means."""
    pts = points.detach().float()
    sums = torch.zeros(n_clusters, pts.shape[1]).index_add_(0, labels, pts)
    means = sums / cluster_sizes(labels, n_clusters).clamp_min(1).unsqueeze(1).float()
    return float((pts - means[labels]).pow(2).sum())


def expert_permutation(labels: Tensor, n_experts: int) -> Tensor:
    """Neuron order that makes expert e the contiguous block [e*s, (e+1)*s).

    Args:
        labels: (d_ff,) cluster id of each neuron, every cluster of equal size s.
        n_experts: number of clusters E.

    Returns:
        perm (d_ff,) int64: new neuron i is old neuron ``perm[i]``; within an expert the
        original order is kept.

    Raises:
        InputError: if the clusters are not all of size d_ff / E.
    """
    sizes = cluster_sizes(labels, n_experts)
    size = check_divisible(labels.numel(), n_experts)
    if labels.numel() and (sizes != size).any():
        raise InputError(
            f"expert sizes must all be {size}, got {sizes.tolist()}; cluster with "
            "balanced_kmeans (equal-size clusters) before permuting"
        )
    return torch.argsort(labels.long(), stable=True)


def invert_permutation(perm: Tensor) -> Tensor:
    """``inv`` with ``inv[perm[i]] == i``: maps an original neuron to its new position."""
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel(), dtype=perm.dtype)
    return inv


def avg_k_gates(keys: Tensor, n_experts: int) -> Tensor:
    """Avg-k gate vectors: the mean key row of each expert (keys already grouped).

    With keys (d_ff, d) in expert-contiguous order, ``gates @ x`` is, for every expert,
    the mean pre-activation (without bias) of its neurons.

    Args:
        keys: (d_ff, d) un-normalised key matrix W0, expert e in rows [e*s, (e+1)*s).
        n_experts: number of experts E; must divide d_ff.

    Returns:
        (E, d) fp32 gate vectors.
    """
    d_ff, d = keys.shape
    size = check_divisible(d_ff, n_experts)
    return keys.detach().float().reshape(n_experts, size, d).mean(dim=1)


def topk_experts(logits: Tensor, top_k: int) -> Tensor:
    """Indices (..., top_k) of the ``top_k`` largest router logits (..., E).

    Raises:
        InputError: if ``top_k`` is not in [1, E].
    """
    n_experts = logits.shape[-1]
    if not 1 <= top_k <= n_experts:
        raise InputError(
            f"top_k must be in [1, {n_experts}] for {n_experts} experts, got {top_k}; "
            "choose k <= E (the paper uses k = E/4)"
        )
    return logits.topk(top_k, dim=-1).indices


def expert_mask(logits: Tensor, top_k: int, expert_size: int) -> Tensor:
    """Unit-weight neuron mask: 1 on the neurons of the ``top_k`` experts, 0 elsewhere.

    Args:
        logits: (..., E) router logits.
        top_k: experts kept per token.
        expert_size: neurons per expert s.

    Returns:
        (..., E * s) mask of ``logits.dtype`` holding only 0 and 1.
    """
    chosen = topk_experts(logits, top_k)  # (..., k)
    onehot = torch.zeros_like(logits).scatter_(-1, chosen, 1.0)  # (..., E)
    return onehot.repeat_interleave(expert_size, dim=-1)  # (..., E*s)
