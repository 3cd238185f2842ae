"""TIES' fast paths: the exact per-tensor top-k cut by radix select on float32 bit patterns,
the tie-splitting prune, the one-clamp divisor, the output buffer and the NaN/Inf scan."""

import pytest
import torch

from modularevo.errors import InputError
from modularevo.merging import thresholds
from modularevo.merging.backend import TorchBackend
from modularevo.merging.sparsify import Cut, cut_mask, cut_prune, topk_mask

N = 70_001  # above the small-tensor kthvalue path (4 * 2**14), not a multiple of any chunk


def _pair(dtype: torch.dtype, kind: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    base = 0.02 * torch.randn(N, generator=g)
    delta = 0.001 * torch.randn(N, generator=g)
    if kind == "quantized":
        delta = torch.round(delta * 4000) / 4000  # a few values, each shared by thousands
    if kind == "sparse":
        delta[torch.rand(N, generator=g) < 0.7] = 0.0  # most entries unchanged: ties at 0
    return (base + delta).to(dtype), base.to(dtype)


def _kept(model: torch.Tensor, base: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    cut = thresholds.topk_cut(model, base, k, chunk)
    absd = (model.float() - base.float()).abs()
    parts = [cut_mask(absd[a : a + chunk], cut.shifted(a)) for a in range(0, N, chunk)]
    return torch.cat(parts)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("kind", ["normal", "quantized", "sparse"])
def test_radix_cut_equals_topk_for_every_dtype_and_edge_k(dtype: torch.dtype, kind: str):
    model, base = _pair(dtype, kind)
    absd = (model.float() - base.float()).abs()
    for k in (0, 1, N // 5, N - 1, N):
        got = _kept(model, base, k, chunk=9_999)
        assert int(got.sum()) == k, (k, int(got.sum()))
        assert torch.equal(got, topk_mask(absd, k)), k


@pytest.mark.parametrize("k", [1, 17, N // 5, N - 1])
def test_cut_is_exactly_the_kth_largest_not_a_neighbour(k: int):
    # distinct magnitudes: a threshold one rank off keeps k - 1 or k + 1 entries
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(3))
    model = (perm.float() + 1.0) * 1e-3 * torch.where(perm % 2 == 0, 1.0, -1.0)
    base = torch.zeros(N)
    cut = thresholds.topk_cut(model, base, k, chunk=4_096)
    ranked = model.abs().sort(descending=True).values
    assert cut == Cut(float(ranked[k - 1]))  # every tie kept: there are none
    assert float(ranked[k]) < cut.value < (float(ranked[k - 2]) if k > 1 else float("inf"))
    assert int(cut_mask(model.abs(), cut).sum()) == k


def test_last_tie_is_the_kth_entry_in_flat_order():
    n = N
    model = torch.zeros(n)
    model[::7] = 0.5  # 10 001 ties
    model[5] = 2.0
    base = torch.zeros(n)
    k = 1 + 4_000  # the 2.0 and the first 4000 ties, in flat order
    cut = thresholds.topk_cut(model, base, k, chunk=3_000)
    ties = torch.nonzero(model == 0.5).reshape(-1)
    assert cut == Cut(0.5, int(ties[3_999]))


def _passes(monkeypatch: pytest.MonkeyPatch) -> list[thresholds._Pass]:
    seen: list[thresholds._Pass] = []
    update = thresholds._Search.update

    def spy(self: thresholds._Search, p: thresholds._Pass, per_chunk, bands) -> None:
        seen.append(p)
        update(self, p, per_chunk, bands)

    monkeypatch.setattr(thresholds._Search, "update", spy)
    return seen


def test_tied_bf16_vector_resolves_in_one_compare_pass(monkeypatch: pytest.MonkeyPatch):
    g = torch.Generator().manual_seed(6)
    base32 = 0.02 * torch.randn(N, generator=g)
    model = (base32 + 2e-4 * torch.randn(N, generator=g)).bfloat16()  # a fine-tune's few ulps
    base = base32.bfloat16()
    seen = _passes(monkeypatch)
    absd = (model.float() - base.float()).abs()
    got = _kept(model, base, N // 5, chunk=20_000)
    assert torch.equal(got, topk_mask(absd, N // 5))
    assert len(seen) == 1
    assert seen[0].shift < 0


@pytest.mark.parametrize("k", [1, 700, N // 5, N - 1])
def test_distinct_float32_vector_resolves_in_one_collecting_pass(
    monkeypatch: pytest.MonkeyPatch, k: int
):
    model, base = _pair(torch.float32, "normal", seed=8)
    seen = _passes(monkeypatch)
    absd = (model.float() - base.float()).abs()
    got = _kept(model, base, k, chunk=20_000)
    assert torch.equal(got, topk_mask(absd, k))
    assert seen[0].collect
    assert len(seen) == 1 or k in (1, N - 1)  # the extremes may fall outside the bracket


@pytest.mark.parametrize("few", [0, 5])
def test_histogram_passes_and_a_missed_bracket_still_give_the_topk(
    monkeypatch: pytest.MonkeyPatch, few: int
):
    model, base = _pair(torch.float32, "normal", seed=4)
    absd = (model.float() - base.float()).abs()
    monkeypatch.setattr(thresholds, "_FEW", few)  # 0: the first pass is a histogram
    monkeypatch.setattr(thresholds, "_bracket", lambda sample, q: (1.0, 2.0))  # misses
    seen = _passes(monkeypatch)
    got = _kept(model, base, 1234, chunk=1_000)  # 64 buckets per pass: several passes
    assert torch.equal(got, topk_mask(absd, 1234))
    assert len(seen) >= 3
    assert any(p.shift > 0 for p in seen)


@pytest.mark.parametrize("last_tie", [-5, 0, 1, 4_999, 9_998, 9_999, 50_000])
def test_cut_prune_keeps_ties_up_to_last_tie_only(last_tie: int):
    g = torch.Generator().manual_seed(5)
    delta = torch.round(torch.randn(100, 100, generator=g) * 2) / 2  # ties at every value
    cut = Cut(1.0, last_tie)
    want = delta * cut_mask(delta.abs(), cut)
    got = cut_prune(delta, cut)
    assert got.shape == delta.shape
    assert torch.equal(got, want)
    assert torch.equal(cut_prune(delta, 1.0), delta * (delta.abs() >= 1.0))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_torch_backend_finds_nan_and_inf_anywhere(dtype: torch.dtype, bad: float):
    x = torch.ones(3 * (1 << 20) + 7, dtype=dtype)  # several scan pieces
    TorchBackend().check_finite(x, "w", "m")
    x[-1] = bad  # in the last, partial piece
    with pytest.raises(InputError, match=r"'w' of m holds"):
        TorchBackend().check_finite(x.view(7, -1) if x.numel() % 7 == 0 else x, "w", "m")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_torch_backend_accepts_large_finite_values(dtype: torch.dtype):
    big = torch.finfo(dtype).max
    x = torch.full((1 << 21,), big, dtype=dtype)  # the sum overflows; every value is finite
    TorchBackend().check_finite(x, "w", "m")


def test_chunked_merge_writes_into_a_model_input_only_when_nothing_shares_it():
    from types import SimpleNamespace

    from modularevo.merging.stream import _output_buffer

    task = SimpleNamespace(shape=(4, 3), out_code="BF16")
    be = TorchBackend()
    base = torch.zeros(4, 3, dtype=torch.bfloat16)
    a, b = torch.ones(4, 3, dtype=torch.bfloat16), torch.ones(4, 3, dtype=torch.bfloat16)
    assert _output_buffer(be, task, [a, b], base) is a  # type: ignore[arg-type]
    for tensors in ([base, b], [a, a], [base.view(4, 3), b], [a.float(), b], [a.t(), b]):
        out = _output_buffer(be, task, tensors, base)  # type: ignore[arg-type]
        assert all(out is not t for t in [*tensors, base])
        assert out.dtype == torch.bfloat16
        assert tuple(out.shape) == (4, 3)


@pytest.mark.parametrize("weights", [[0.3, 0.3, 0.3], [0.7, 0.4, 1.0], [1e-3, 2.0, 0.5]])
def test_positive_weight_divisor_clamp_is_bitwise_the_zero_to_one_rule(weights: list[float]):
    from modularevo.merging.consensus import merge_deltas

    g = torch.Generator().manual_seed(7)
    deltas = torch.round(torch.randn(3, 50_000, generator=g) * 3) / 3
    deltas[torch.rand(3, 50_000, generator=g) < 0.6] = 0.0  # trimmed: many entries agree on 0
    w = torch.tensor(weights)
    weighted = deltas * w[:, None]
    got = merge_deltas(weighted.clone(), w, consensus="sum", normalize=True, inplace=True)
    # the reference rule: divisor = Σ agreeing weights, 0 -> 1
    sign = torch.where(weighted.sum(0) >= 0, 1.0, -1.0)
    agree = (weighted * sign) > 0
    mixed = (weighted * agree).sum(0)
    divisor = (w[:, None] * agree).sum(0)
    want = mixed / torch.where(divisor == 0, 1.0, divisor)
    assert torch.equal(got, want)
    assert torch.equal(got.view(torch.int32) & 0x7FFFFFFF, want.view(torch.int32) & 0x7FFFFFFF)
