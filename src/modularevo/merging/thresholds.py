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

:func:`topk_cuts` does the per-tensor trim's exact top-k in chunks, so the executor
can run per-tensor TIES chunk by chunk with the same result as on the whole tensor.
It is a radix select of the same kind, steered by a sample: a bf16 task vector's
``|τ|`` takes few distinct values (a fine-tune moves most weights by a few ulps), so
the k-th largest is usually one the sample holds, found by counting the entries at
or above it and its successor: one pass of two compares, no sort, no copy of ``|τ|``
(the former bracket-and-``kthvalue`` collected the ~17% of entries tied at the cut of
a 1.4B model's embedding: 1.5 GB and 4 s).
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
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
    at the cut kept in flat order) without ever holding ``|τ|`` for more than a chunk or
    sorting it: a radix select on the float32 bit patterns of ``|τ|`` (:class:`_Search`).
    Each pass over the chunks counts, per chunk, the entries at or above a few edges;
    the first pass's edges come from a strided sample (the sample's distinct values near
    the k-th, compared directly: in bf16 task vectors thousands of entries share each
    value), later passes histogram the bit patterns left between the two nearest edges.
    The last kept tie is located from the per-chunk counts, reading one chunk again.

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
    starts = range(0, n, chunk)
    sizes = np.array([min(chunk, n - a) for a in starts], dtype=np.int64)
    searches: dict[int, _Search] = {}
    bins = min(_BINS, max(64, min(chunk, _PIECE) // 16))  # buckets per pass: few for tiny chunks
    for i, k in enumerate(ks):
        if k >= n or k <= 0:
            cuts[i] = Cut(float("-inf")) if k >= n else Cut(float("inf"), -1)
        elif n <= 4 * _SAMPLE:
            cuts[i] = _cut_of(absdelta(i, 0, n), k)
        else:
            first = _first_edges(absdelta(i, 0, n, n // _SAMPLE), k / n, bins)
            searches[i] = _Search(k, sizes, first, bins)
    while searches:
        passes = {i: s.next_pass() for i, s in searches.items()}
        job = functools.partial(_count_chunk, models, base, chunk, passes)
        counts = list(run(job, starts))  # per chunk: {model: counts at or above each edge}
        for i in list(searches):
            s = searches[i]
            bands = [c[i][1] for c in counts] if passes[i].collect else None
            s.update(passes[i], np.stack([c[i][0] for c in counts]), bands)
            if s.done:
                cuts[i] = s.cut(functools.partial(absdelta, i), chunk, n)
                del searches[i]
    return [c for c in cuts if c is not None]


_TOP = 1 << 31  # above every |x| bit pattern (NaN included, ordered last as kthvalue does)
_FEW = 5  # sample values near the k-th that the first pass compares against directly
_PIECE = 1 << 20  # elements per step inside a chunk (its temporaries stay in cache)


@dataclass(frozen=True)
class _Pass:
    """Edges (int32 bit patterns, ascending) to count ``|τ|`` bits at or above.

    ``shift`` < 0: compare against each edge. Otherwise the edges are uniform,
    ``edges[t] = edges[0] + t << shift`` with ``edges[0]`` a multiple of ``1 << shift``,
    and are counted with one histogram of ``bits >> shift``.
    """

    edges: tuple[int, ...]
    shift: int = -1
    collect: bool = False  # also gather the bits in [edges[0], edges[1]) (few, distinct)


def _uniform_pass(lo: int, hi: int, bins: int) -> _Pass:
    """Uniform edges over ``[lo, hi)``, at most ``bins`` buckets."""
    s = 0
    while -(-(hi - ((lo >> s) << s)) // (1 << s)) > bins:
        s += 1
    start = (lo >> s) << s
    count = -(-(hi - start) // (1 << s))
    return _Pass(tuple(range(start, start + (count + 1 << s), 1 << s)), s)


def _first_edges(sample: Tensor, q: float, bins: int) -> _Pass:
    """The first pass's edges: around the sample's few values between its q-quantile
    bracket, or a histogram of the bracket when it holds many values."""
    lo, hi = _bracket(sample, q)
    lo_b, hi_b = (int(np.float32(v).view(np.int32)) for v in (lo, hi))
    bits = sample.contiguous().view(torch.int32)
    inside = bits[(bits >= lo_b) & (bits <= hi_b)]
    near = torch.unique(inside).tolist()
    if len(near) > _FEW and 2 * len(near) >= inside.numel() and hi_b + 1 < _TOP:
        # mostly distinct values (float32 task vectors): the ~3% of entries in the bracket
        # are gathered in the pass and the k-th is selected among them, one pass in all
        return _Pass((lo_b, hi_b + 1), collect=True)
    if len(near) > _FEW:
        return _uniform_pass(lo_b, hi_b + 1, bins)
    edges = {lo_b, hi_b + 1, *near, *(v + 1 for v in near)}
    return _Pass(tuple(sorted(e for e in edges if e < _TOP)))


class _Search:
    """One model's radix select: bit patterns ``lo <= v < hi`` hold the k-th largest.

    Invariant: ``G(lo) >= k > G(hi)``, where ``G(e)`` counts the entries whose ``|τ|``
    bits are ``>= e``; per-chunk counts at ``lo`` and ``hi`` are kept to place ties.
    """

    def __init__(self, k: int, sizes: np.ndarray, first: _Pass, bins: int) -> None:
        self.k, self.bins = k, bins
        self.lo, self.lo_counts = 0, sizes  # every entry is >= 0
        self.hi, self.hi_counts = _TOP, np.zeros_like(sizes)
        self.first: _Pass | None = first

    @property
    def done(self) -> bool:
        """Whether ``lo`` is the k-th largest bit pattern."""
        return self.hi - self.lo == 1

    def next_pass(self) -> _Pass:
        """The edges that narrow ``[lo, hi)`` most cheaply."""
        first, self.first = self.first, None
        if first is not None:
            return first
        if self.hi - self.lo <= 2 * _FEW:  # a few patterns left: compare to each
            return _Pass(tuple(range(self.lo + 1, self.hi)))
        return _uniform_pass(self.lo, self.hi, self.bins)

    def update(self, p: _Pass, per_chunk: np.ndarray, bands: list[np.ndarray] | None) -> None:
        """Narrow ``[lo, hi)`` with a pass's (chunks, edges) counts at or above its edges
        (and, for a collecting pass, each chunk's bits between its two edges)."""
        totals = per_chunk.sum(axis=0)  # non-increasing along the ascending edges
        at_least = np.flatnonzero(totals >= self.k)
        j = int(at_least[-1]) if at_least.size else -1  # the last edge with G >= k
        if j >= 0 and p.edges[j] > self.lo:
            self.lo, self.lo_counts = p.edges[j], per_chunk[:, j]
        if j + 1 < len(p.edges) and p.edges[j + 1] < self.hi:
            self.hi, self.hi_counts = p.edges[j + 1], per_chunk[:, j + 1]
        if bands is not None and j == 0:  # the k-th is among the gathered bits
            gathered = np.concatenate(bands)
            pos = gathered.size - (self.k - int(totals[1]))  # the k-th largest, ascending
            v = int(np.partition(gathered, pos)[pos])
            above = per_chunk[:, 1]
            self.lo, self.lo_counts = v, above + [np.count_nonzero(b >= v) for b in bands]
            self.hi, self.hi_counts = v + 1, above + [np.count_nonzero(b > v) for b in bands]

    def cut(self, absdelta: Callable[[int, int], Tensor], chunk: int, n: int) -> Cut:
        """The :class:`Cut` (once :attr:`done`) of ``n`` entries; ``absdelta(a, b)``: ``|τ|``
        of entries ``[a, b)``."""
        value = float(np.int32(self.lo).view(np.float32))
        ties = self.lo_counts - self.hi_counts  # entries equal to the k-th, per chunk
        ties_kept = self.k - int(self.hi_counts.sum())
        if ties_kept == int(ties.sum()):
            return Cut(value)  # every tie is kept
        seen = np.cumsum(ties)
        c = int(np.searchsorted(seen, ties_kept))  # the chunk holding the last kept tie
        return Cut(value, _nth_equal(absdelta, value, ties_kept - int(seen[c] - ties[c]),
                                     (c * chunk, min(c * chunk + chunk, n))))  # fmt: skip


def _nth_equal(
    absdelta: Callable[[int, int], Tensor], value: float, nth: int, span: tuple[int, int]
) -> int:
    """The flat index of the ``nth`` entry equal to ``value`` in ``span``: counted piece by
    piece, indexed in the one piece that holds it (in bf16 task vectors ~1 entry in 6
    can tie at the cut, so indexing a whole chunk would cost a large index tensor)."""
    for a in range(span[0], span[1], _LOCATE):
        eq = absdelta(a, min(a + _LOCATE, span[1])) == value
        here = int(torch.count_nonzero(eq))
        if nth <= here:
            return a + int(torch.nonzero(eq).reshape(-1)[nth - 1])
        nth -= here
    raise AssertionError("fewer ties than counted")  # pragma: no cover


_LOCATE = 1 << 16


def _count_chunk(
    models: Sequence[Tensor], base: Tensor, chunk: int, passes: dict[int, _Pass], a: int
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per model in ``passes``: how many ``|τ|`` entries of chunk ``a`` are >= each edge,
    and (collecting passes) the bit patterns between the first two edges, in flat order."""
    b = min(a + chunk, base.numel())
    base32, buf, keys, mask = _scratch(min(b - a, _PIECE))
    hists = {i: np.zeros(len(p.edges) + 1, dtype=np.int64) for i, p in passes.items()}
    gathered: dict[int, list[np.ndarray]] = {i: [] for i in passes}
    for pa in range(a, b, _PIECE):
        pb = min(pa + _PIECE, b)
        size = pb - pa
        b32 = base32[:size].copy_(base[pa:pb])
        for i, p in passes.items():
            x = buf[:size].copy_(models[i][pa:pb]).sub_(b32).abs_()  # as .float() - .float()
            if p.shift >= 0:
                hists[i] += _bucket_counts(x, p, keys[:size])
                continue
            bits, m = x.view(torch.int32).numpy(), mask[:size]
            for j, e in enumerate(p.edges):  # numpy compares and counts faster than torch
                hists[i][j] += np.count_nonzero(np.greater_equal(bits, e, out=m))
            if p.collect:
                gathered[i].append(bits[(bits >= p.edges[0]) & (bits < p.edges[1])])
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for i, p in passes.items():  # uniform: bucket t + 1 holds [edges[t], edges[t + 1])
        h = np.cumsum(hists[i][::-1])[::-1][1:] if p.shift >= 0 else hists[i][:-1]
        band = np.concatenate(gathered[i]) if gathered[i] else np.empty(0, dtype=np.int32)
        out[i] = (h.astype(np.int32), band)  # a chunk holds fewer than 2**31 entries
    return out


def _bucket_counts(x: Tensor, p: _Pass, keys: Tensor) -> np.ndarray:
    """Histogram of ``|τ|`` bits ``x`` over a uniform pass: bucket 0 below its first edge,
    bucket t its t-th interval, the last bucket at or above its last edge."""
    s, first = p.shift, p.edges[0] >> p.shift
    last = min(first + len(p.edges) - 1, _TOP - 1)  # int32 bounds; nothing reaches _TOP
    torch.bitwise_right_shift(x.view(torch.int32), s, out=keys)
    keys.clamp_(first - 1, last).sub_(first - 1)
    return torch.bincount(keys, minlength=len(p.edges) + 1).numpy()


_LOCAL = threading.local()


def _scratch(size: int) -> tuple[Tensor, Tensor, Tensor, np.ndarray]:
    """This thread's reusable buffers of ``size`` elements: two float32, one int32, one bool."""
    bufs = getattr(_LOCAL, "bufs", None)
    if bufs is None or bufs[0].numel() < size:
        bufs = (
            torch.empty(size),
            torch.empty(size),
            torch.empty(size, dtype=torch.int32),
            np.empty(size, dtype=bool),
        )
        _LOCAL.bufs = bufs
    return bufs[0][:size], bufs[1][:size], bufs[2][:size], bufs[3][:size]


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
