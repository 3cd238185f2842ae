"""Exact global |task vector| thresholds per model, in bounded memory.

TIES' paper trims each task vector globally: one threshold per model over all
of its merged entries, keeping the ``int(density · N)`` largest ``|τ|``. Sorting
N entries (``kthvalue`` over the whole model, as MergeLM does) costs O(N) memory;
here two streaming passes find the exact same k-th value with two histograms of
65 536 bins each:

1. bucket every ``|τ|`` by the top 16 bits of its float32 bit pattern (for
   non-negative floats the bit pattern orders like the value) and find the bucket
   holding the k-th largest;
2. histogram the low 16 bits of the entries in that bucket: the k-th largest is
   then known exactly.

Entries with ``|τ| >= threshold`` are kept (ties at the threshold are all kept).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

_BINS = 1 << 16
CHUNK = 1 << 22

# (model index, |τ| flat chunk as float32) pairs, streamed in any order.
AbsDeltaStream = Callable[[], Iterator[tuple[int, Tensor]]]


def _bits(chunk: Tensor) -> Tensor:
    return chunk.contiguous().view(torch.int32)


def kth_largest_bits(stream: AbsDeltaStream, k: Sequence[int], num_models: int) -> list[float]:
    """The exact k-th largest value of each model's |τ| entries (two passes).

    Args:
        stream: yields ``(model index, |τ| chunk)``; called twice, must repeat itself.
        k: entries to keep per model (``0`` → ``inf``: keep none).
        num_models: K.

    Returns:
        K thresholds; keeping ``|τ| >= threshold`` keeps at least ``k`` entries.
    """
    hist = torch.zeros(num_models, _BINS, dtype=torch.int64)
    for i, chunk in stream():
        hist[i] += torch.bincount(_bits(chunk) >> 16, minlength=_BINS)[:_BINS]
    buckets = [_bucket_of_kth(hist[i], k[i]) for i in range(num_models)]
    low = torch.zeros(num_models, _BINS, dtype=torch.int64)
    for i, chunk in stream():
        b, _ = buckets[i]
        if b < 0:
            continue
        bits = _bits(chunk)
        sel = bits[(bits >> 16) == b]
        if sel.numel():
            low[i] += torch.bincount(sel & 0xFFFF, minlength=_BINS)[:_BINS]
    out = []
    for i in range(num_models):
        b, rank = buckets[i]
        if b < 0:
            out.append(float("inf") if k[i] <= 0 else 0.0)
            continue
        lo, _ = _bucket_of_kth(low[i], rank)
        value = torch.tensor([(b << 16) | lo], dtype=torch.int32).view(torch.float32)
        out.append(float(value.item()))
    return out


def _bucket_of_kth(hist: Tensor, k: int) -> tuple[int, int]:
    """(bucket holding the k-th largest entry, its rank inside the bucket); (-1, 0) if none."""
    total = int(hist.sum())
    if k <= 0 or total == 0:
        return -1, 0
    k = min(k, total)
    above = torch.flip(torch.cumsum(torch.flip(hist, [0]), 0), [0])  # entries in bucket >= b
    b = int(torch.nonzero(above >= k).max())
    in_higher = int(above[b + 1]) if b + 1 < _BINS else 0
    return b, k - in_higher


def keep_counts(densities: Sequence[float], totals: Sequence[int]) -> list[int]:
    """``int(density · N)`` per model, as the per-tensor trim counts."""
    return [max(0, min(n, int(d * n))) for d, n in zip(densities, totals, strict=False)]
