"""The pure loss core of MwT (Modularizing while Training, https://arxiv.org/abs/2306.09376).

For every gated layer the per-sample gates ``G`` (B x C) are the sample's kernel relevance. With
``Ĝ`` the row-normalised gates and ``S = Ĝ Ĝᵀ`` their cosine matrix over the pairs ``i < j``:

* cohesion  = mean ``S_ij`` over same-class pairs (high: a class always uses the same kernels);
* coupling  = mean ``S_ij`` over cross-class pairs (low: classes use different kernels).

Both are averaged over layers. The paper's training loss is
``CE + alpha * (1 - cohesion) + beta * coupling`` with ``alpha = 0.5, beta = 1.5``.

Fixed against the reference code: an all-zero gate row (every kernel switched off, possible since
gates are ``ReLU(tanh(.))``) has cosine 0 instead of NaN, and a batch without any same-class (or
cross-class) pair contributes 0 to that term instead of NaN.

Example:
    >>> g = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    >>> sims = pair_similarity(g, torch.tensor([0, 0, 1]))
    >>> round(float(sims.cohesion), 4), round(float(sims.coupling), 4)
    (0.7071, 0.3536)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class PairSimilarity(NamedTuple):
    """Mean cosine similarity of same-class and cross-class gate pairs in one layer."""

    cohesion: Tensor  # scalar; 0 when same_pairs == 0
    coupling: Tensor  # scalar; 0 when cross_pairs == 0
    same_pairs: int
    cross_pairs: int


class MwTLoss(NamedTuple):
    """The MwT training loss and its parts (all scalars; ``total`` carries the gradient)."""

    total: Tensor
    ce: Tensor
    cohesion_loss: Tensor  # 1 - mean same-class cosine
    coupling_loss: Tensor  # mean cross-class cosine
    kernel_rate: Tensor  # fraction of (sample, kernel) gates that are on


def _check_gates(gates: Tensor, labels: Tensor) -> None:
    if gates.ndim != 2 or labels.ndim != 1 or gates.shape[0] != labels.shape[0]:
        raise ValueError(
            f"gates must be (batch, kernels) and labels (batch,), got {tuple(gates.shape)} and "
            f"{tuple(labels.shape)}; pass one layer's gates with the batch's labels"
        )


def pair_similarity(gates: Tensor, labels: Tensor, *, eps: float = 1e-8) -> PairSimilarity:
    """Cohesion and coupling of one layer's gates (cosine similarity over pairs ``i < j``).

    Args:
        gates: per-sample kernel gates ``(B, C)``, non-negative.
        labels: class ids ``(B,)``.
        eps: floor of a row's norm, so an all-zero row has similarity 0 (not NaN).

    Returns:
        A :class:`PairSimilarity`; a term without pairs is 0 and its pair count is 0.

    Raises:
        ValueError: if the shapes do not match.
    """
    _check_gates(gates, labels)
    unit = F.normalize(gates.float(), dim=1, eps=eps)
    sim = unit @ unit.T  # (B, B)
    upper = torch.ones_like(sim, dtype=torch.bool).triu(diagonal=1)
    same = labels[:, None] == labels[None, :]
    same_mask, cross_mask = same & upper, ~same & upper
    n_same, n_cross = int(same_mask.sum()), int(cross_mask.sum())
    zero = sim.new_zeros(())
    cohesion = sim[same_mask].mean() if n_same else zero
    coupling = sim[cross_mask].mean() if n_cross else zero
    return PairSimilarity(cohesion, coupling, n_same, n_cross)


def cohesion_coupling_losses(gates: Sequence[Tensor], labels: Tensor) -> tuple[Tensor, Tensor]:
    """MwT's cohesion loss ``1 - cohesion`` and coupling loss ``coupling``, averaged over layers.

    Args:
        gates: one ``(B, C_l)`` gate tensor per gated layer.
        labels: class ids ``(B,)``.

    Returns:
        ``(cohesion_loss, coupling_loss)``; a term is 0 when the batch has no pair of its kind.

    Raises:
        ValueError: if ``gates`` is empty or a shape does not match.
    """
    if not gates:
        raise ValueError("got no gate tensors; the model has no gated layer to modularize")
    sims = [pair_similarity(g, labels) for g in gates]
    zero = gates[0].new_zeros((), dtype=torch.float32)
    cohesion_loss = (
        1 - torch.stack([s.cohesion for s in sims]).mean() if sims[0].same_pairs else zero
    )
    coupling_loss = torch.stack([s.coupling for s in sims]).mean() if sims[0].cross_pairs else zero
    return cohesion_loss, coupling_loss


def kernel_rate(gates: Sequence[Tensor]) -> Tensor:
    """Fraction of (sample, kernel) pairs whose gate is on (> 0), over all gated layers."""
    on = sum(int((g > 0).sum()) for g in gates)
    total = sum(g.numel() for g in gates)
    return torch.tensor(on / max(total, 1))


def mwt_loss(
    logits: Tensor, labels: Tensor, gates: Sequence[Tensor], *, alpha: float, beta: float
) -> MwTLoss:
    """MwT's training loss ``CE + alpha * (1 - cohesion) + beta * coupling``.

    Args:
        logits: ``(B, num_classes)``.
        labels: class ids ``(B,)``.
        gates: the model's per-layer gates, each ``(B, C_l)``.
        alpha: weight of the cohesion loss (paper: 0.5).
        beta: weight of the coupling loss (paper: 1.5).

    Returns:
        An :class:`MwTLoss` whose ``total`` is differentiable.

    Raises:
        ValueError: if shapes do not match or ``gates`` is empty.
    """
    ce = F.cross_entropy(logits, labels)
    cohesion_loss, coupling_loss = cohesion_coupling_losses(gates, labels)
    total = ce + alpha * cohesion_loss + beta * coupling_loss
    return MwTLoss(total, ce, cohesion_loss, coupling_loss, kernel_rate(gates))


def class_kernel_frequency(gates: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """For each class, the fraction of its samples whose gate of each kernel is on.

    Args:
        gates: gates of one layer over a data set ``(N, C)``.
        labels: class ids ``(N,)``.
        num_classes: number of classes K.

    Returns:
        ``(K, C)`` frequencies in [0, 1]; a class without samples has a row of zeros.
    """
    _check_gates(gates, labels)
    on = (gates > 0).float()
    onehot = F.one_hot(labels.long(), num_classes).float()  # (N, K)
    counts = onehot.sum(0).clamp_min(1)[:, None]
    return (onehot.T @ on) / counts


def keep_kernels(frequency: Tensor, threshold: float) -> Tensor:
    """Kernels of each class module: those used by at least ``threshold`` of the class.

    MwT lowers the threshold in steps of 0.05 when a layer would end up empty; here such a class
    keeps its most frequently used kernel(s) instead, so a module never has an empty layer and
    never depends on the step size.

    Args:
        frequency: ``(K, C)`` from :func:`class_kernel_frequency`.
        threshold: in (0, 1].

    Returns:
        ``(K, C)`` bool, at least one True per row.
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must lie in (0, 1], got {threshold}; the paper uses 0.9")
    keep = frequency >= threshold
    top = frequency == frequency.max(dim=1, keepdim=True).values
    return torch.where(keep.any(dim=1, keepdim=True), keep, top)


def jaccard_matrix(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise Jaccard similarity of the rows of two bool matrices ``(N, C)``, ``(M, C)``.

    Two empty rows have similarity 1 (they are the same set).
    """
    a, b = a.float(), b.float()
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(inter))
