"""Which entries of a task vector to keep: exact top-k masks, cuts and thresholds on scores.

Pure functions from scores (usually ``|τ|``) to a bool mask, a keep count or a threshold;
the sparsifiers of :mod:`modularevo.merging.sparsify` apply them to task vectors.

Keep counts follow mergekit (``k = int(density * numel)``, Python float
arithmetic) so that recipes shared with mergekit keep the same entries. Ties in
magnitude are broken towards the lower flat index, which makes the masks
deterministic on every machine.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from modularevo.utils.lazy import LazyModule

if TYPE_CHECKING:
    import torch
    from torch import Tensor
else:
    torch = LazyModule("torch")


__all__ = [
    "Cut",
    "cut_mask",
    "global_threshold",
    "keep_count",
    "kth_largest",
    "nm_mask",
    "topk_mask",
]


def keep_count(density: float, numel: int) -> int:
    """Entries kept at ``density`` out of ``numel``: ``int(density * numel)``, at least 1.

    As mergekit 0.1.5's ``magnitude``: a positive density keeps at least one entry of
    a non-empty tensor (a 10-entry bias at density 0.05 keeps its largest entry, not
    nothing); density 0 keeps nothing.
    """
    if density <= 0 or numel <= 0:
        return 0
    return max(1, min(numel, int(density * numel)))


def kth_largest(flat: Tensor, k: int) -> Tensor:
    """The ``k``-th largest value of a 1-D tensor (``1 <= k <= numel``), exactly.

    Large inputs first bracket the answer with the quantiles of a strided sample, then
    select exactly inside the (small) bracket; if the bracket misses, it falls back to
    a full ``kthvalue``. Several times faster than ``kthvalue``/``topk`` on big tensors.
    """
    n = flat.numel()
    if n <= _SAMPLE * 4:
        return torch.kthvalue(flat, n - k + 1).values
    sample = flat[:: n // _SAMPLE]
    m = sample.numel()
    q = k / n
    margin = 0.002 + 4.0 * math.sqrt(q * (1 - q) / m)
    r_hi = max(1, int((q - margin) * m))  # rank (largest first) of the upper bound
    r_lo = min(m, int((q + margin) * m) + 1)  # rank of the lower bound
    hi = torch.kthvalue(sample, m - r_hi + 1).values
    lo = torch.kthvalue(sample, m - r_lo + 1).values
    above = int(torch.count_nonzero(flat > hi))
    need = k - above
    if need >= 1:
        band = flat[(flat >= lo) & (flat <= hi)]
        if need <= band.numel():
            return torch.kthvalue(band, band.numel() - need + 1).values
    return torch.kthvalue(flat, n - k + 1).values


_SAMPLE = 1 << 14


def topk_mask(scores: Tensor, k: int) -> Tensor:
    """Bool mask (same shape) of exactly the ``k`` largest ``scores``.

    Ties at the cut are resolved in favour of the lower flat index. Runs in linear
    time (:func:`kth_largest`) rather than sorting, which matters on embeddings.
    """
    flat = scores.reshape(-1)
    n = flat.numel()
    if k >= n:
        return torch.ones_like(scores, dtype=torch.bool)
    if k <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    thr = kth_largest(flat, k)
    mask = flat >= thr
    if int(torch.count_nonzero(mask)) > k:  # ties at the threshold: keep the first ones
        mask = flat > thr
        ties = torch.nonzero(flat == thr).reshape(-1)[: k - int(torch.count_nonzero(mask))]
        mask[ties] = True
    return mask.reshape(scores.shape)


@dataclass(frozen=True)
class Cut:
    """Which entries a magnitude trim keeps: ``|τ| > value``, and ``|τ| == value`` at flat
    positions ``<= last_tie``.

    ``last_tie`` makes an exact top-k reproducible on pieces of a tensor: ties at the
    cut are kept in flat order (lower index first, as :func:`topk_mask` does), so a
    chunk starting at flat offset ``a`` uses :meth:`shifted` ``(a)``. The default keeps
    every tie (TIES' global trim: ``|τ| >= threshold``).
    """

    value: float
    last_tie: int = sys.maxsize

    def shifted(self, offset: int) -> Cut:
        """The same cut for a piece of the tensor that starts at flat ``offset``."""
        if self.last_tie == sys.maxsize:
            return self
        return Cut(self.value, self.last_tie - offset)


def cut_mask(magnitudes: Tensor, cut: Cut | float) -> Tensor:
    """Bool mask of the entries ``cut`` keeps (``magnitudes`` = ``|τ|``, any shape)."""
    c = cut if isinstance(cut, Cut) else Cut(float(cut))
    mask = magnitudes > c.value if c.last_tie < sys.maxsize else magnitudes >= c.value
    if 0 <= c.last_tie < sys.maxsize:
        flat = mask.reshape(-1)
        ties = torch.nonzero(magnitudes.reshape(-1)[: c.last_tie + 1] == c.value).reshape(-1)
        flat[ties] = True
    return mask


def _round_half_up(n: int, r: int, m: int) -> int:
    """``round(n * r / m)`` with halves rounded up, in integers."""
    return (2 * n * r + m) // (2 * m)


def nm_mask(scores: Tensor, n: int, m: int, available: Tensor | None = None) -> Tensor:
    """n:m mask: in every block of ``m`` consecutive (row-major) entries keep the ``n`` largest.

    Args:
        scores: non-negative importance (e.g. ``|delta|``), any shape.
        n, m: keep ``n`` of every ``m`` (``1 <= n <= m``).
        available: optional bool mask; only available positions can be kept, and a
            block with fewer than ``n`` available positions keeps all of them.

    A trailing partial block of ``r = numel % m`` entries keeps ``round(n*r/m)``
    (halves up) entries, i.e. the same density rounded to the nearest count, instead of
    being silently pruned (CABS' RoBERTa code) or rejected (its 7B code).
    """
    flat = scores.reshape(-1).float()
    avail = None if available is None else available.reshape(-1)
    if avail is not None:
        flat = torch.where(avail, flat, torch.full_like(flat, -1.0))
    total = flat.numel()
    full = total // m * m
    out = torch.zeros(total, dtype=torch.bool, device=scores.device)
    if full:
        blocks = flat[:full].reshape(-1, m)
        idx = torch.topk(blocks, n, dim=1).indices
        chosen = torch.zeros_like(blocks, dtype=torch.bool).scatter_(1, idx, True)
        out[:full] = chosen.reshape(-1)
    n_tail = _round_half_up(n, total - full, m)
    if n_tail:
        tail = flat[full:]
        out[full + torch.topk(tail, n_tail).indices] = True
    if avail is not None:
        out &= avail
    return out.reshape(scores.shape)


def global_threshold(magnitudes: Tensor, density: float) -> float:
    """The |τ| threshold that keeps ``int(density * N)`` of ``magnitudes`` (all of one model).

    Helper for the executor's pre-pass of TIES ``trim_scope: global``: pass the
    concatenated ``|τ_t|`` over every merged tensor of model t (or an exact
    equivalent); entries with ``|τ| >= threshold`` are kept. Returns 0.0 at density 1
    (keep all) and ``inf`` when nothing is kept.
    """
    flat = magnitudes.reshape(-1).float()
    k = max(0, min(flat.numel(), int(density * flat.numel())))  # as thresholds.keep_counts
    if k >= flat.numel():
        return 0.0
    if k <= 0:
        return float("inf")
    return float(kth_largest(flat, k))
