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

:func:`topk_cut` does the per-tensor trim's exact top-k in chunks, so the executor
can run per-tensor TIES chunk by chunk with the same result as on the whole tensor.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from modularevo.merging.sparsify import Cut
from modularevo.utils.lazy import LazyModule

if TYPE_CHECKING:
    import torch
    from torch import Tensor
else:
    torch = LazyModule("torch")

_BINS = 1 << 16
CHUNK = 1 << 22

# (model index, |τ| flat chunk as float32) pairs, streamed in any order.
AbsDeltaStream = Callable[[], Iterator[tuple[int, "Tensor"]]]


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


def topk_cut(model: Tensor, base: Tensor, k: int, chunk: int = CHUNK) -> Cut:
    """The exact :class:`Cut` keeping the ``k`` largest ``|model - base|`` (float32) entries.

    One model's case of :func:`topk_cuts`.
    """
    return topk_cuts([model], base, [k], chunk)[0]


def topk_cuts(
    models: Sequence[Tensor],
    base: Tensor,
    ks: Sequence[int],
    chunk: int = CHUNK,
    run: Callable[..., Iterator[Any]] = map,
) -> list[Cut]:
    """Each model's exact :class:`Cut` keeping its ``k`` largest ``|model - base|`` entries.

    Equals :func:`~modularevo.merging.sparsify.topk_mask` on each whole task vector (ties
    at the cut kept in flat order) without ever holding ``|τ|`` for more than a chunk: the
    k-th value is bracketed by the quantiles of a strided sample; one chunked pass counts
    the entries above the bracket and collects the few inside; only when several entries
    equal the k-th value does a second pass find the last tie kept.

    Args:
        models: K flat tensors of one tensor name (any float dtype).
        base: the flat base tensor.
        ks: entries to keep per model.
        chunk, run: elements per chunk; a ``map`` over the chunks (e.g. a thread pool's).
    """
    n = base.numel()

    def absdelta(i: int, a: int, b: int, step: int = 1) -> Tensor:
        return torch.sub(models[i][a:b:step].float(), base[a:b:step].float()).abs_()

    cuts: list[Cut | None] = [None] * len(models)
    brackets: dict[int, tuple[np.float32, np.float32]] = {}
    for i, k in enumerate(ks):
        if k >= n or k <= 0:
            cuts[i] = Cut(float("-inf")) if k >= n else Cut(float("inf"), -1)
        elif n <= 4 * _SAMPLE:
            cuts[i] = _cut_of(absdelta(i, 0, n), k)
        else:
            lo, hi = _bracket(absdelta(i, 0, n, n // _SAMPLE), k / n)
            brackets[i] = (np.float32(lo), np.float32(hi))

    def scan(a: int) -> list[tuple[int, Tensor]]:
        out = []
        b = min(a + chunk, n)
        buf, ge, le = _scratch(b - a)  # reused: no allocation churn in the threads' arenas
        for i, (lo, hi) in brackets.items():
            part = torch.sub(models[i][a:b].float(), base[a:b].float(), out=buf).abs_()
            # numpy compares and compacts float32 several times faster than torch on CPU
            pn = part.numpy()
            above = int(np.count_nonzero(np.greater(pn, hi, out=ge)))
            in_band = np.logical_and(
                np.greater_equal(pn, lo, out=ge), np.less_equal(pn, hi, out=le), out=ge
            )
            out.append((above, torch.from_numpy(pn[in_band])))
        return out

    scans = list(run(scan, range(0, n, chunk))) if brackets else []
    for j, i in enumerate(brackets):
        above = sum(s[j][0] for s in scans)
        bands = [s[j][1] for s in scans]  # per chunk, in flat order
        cuts[i] = _cut_in_band(bands, ks[i], above, functools.partial(absdelta, i), (n, chunk))
    return [c for c in cuts if c is not None]


_LOCAL = threading.local()


def _scratch(size: int) -> tuple[Tensor, np.ndarray, np.ndarray]:
    """This thread's reusable float32 buffer and two bool masks of ``size`` elements."""
    bufs = getattr(_LOCAL, "bufs", None)
    if bufs is None or bufs[0].numel() < size:
        bufs = (torch.empty(size), np.empty(size, dtype=bool), np.empty(size, dtype=bool))
        _LOCAL.bufs = bufs
    return bufs[0][:size], bufs[1][:size], bufs[2][:size]


def _cut_in_band(
    bands: list[Tensor],
    k: int,
    above: int,
    absdelta: Callable[[int, int], Tensor],
    size: tuple[int, int],
) -> Cut:
    """The cut keeping ``k`` entries; ``above`` lie above the chunks' ``bands``.

    ``size`` is (elements, chunk length). A last kept tie is located from the per-chunk
    bands (which hold every tie, in flat order), so only its chunk is read again.
    """
    n, chunk = size
    band = torch.cat(bands)
    need = k - above
    if not 1 <= need <= band.numel():  # the sample missed: exact fallback on the whole |τ|
        return _cut_of(absdelta(0, n), k)
    value = torch.kthvalue(band, band.numel() - need + 1).values
    ties_kept = need - int(torch.count_nonzero(band > value))
    if ties_kept == int(torch.count_nonzero(band == value)):
        return Cut(float(value))  # every tie is kept
    seen = 0
    for c, part in enumerate(bands):
        here = int(torch.count_nonzero(part == value))
        if seen + here >= ties_kept:
            a = c * chunk
            eq = torch.nonzero(absdelta(a, a + chunk) == value).reshape(-1)
            return Cut(float(value), a + int(eq[ties_kept - seen - 1]))
        seen += here
    raise AssertionError("fewer ties than counted")  # pragma: no cover


_SAMPLE = 1 << 14


def _bracket(sample: Tensor, q: float) -> tuple[float, float]:
    """Values that bracket the q-quantile from the top of the population, from a sample."""
    m = sample.numel()
    margin = 0.002 + 4.0 * math.sqrt(q * (1 - q) / m)
    r_hi = max(1, int((q - margin) * m))
    r_lo = min(m, int((q + margin) * m) + 1)
    hi = float(torch.kthvalue(sample, m - r_hi + 1).values)
    lo = float(torch.kthvalue(sample, m - r_lo + 1).values)
    return lo, hi


def _cut_of(flat: Tensor, k: int) -> Cut:
    value = torch.kthvalue(flat, flat.numel() - k + 1).values
    ties_kept = k - int(torch.count_nonzero(flat > value))
    ties = torch.nonzero(flat == value).reshape(-1)
    if ties_kept == ties.numel():
        return Cut(float(value))
    return Cut(float(value), int(ties[ties_kept - 1]))
