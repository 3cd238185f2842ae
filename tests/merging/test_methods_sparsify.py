"""Sparsifiers and their selection: exact keep counts, hand-checked 3x3 cases, expectations,
n:m blocks."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from modularevo.merging import selection
from modularevo.merging import sparsify as sp

X = torch.tensor([[0.1, -0.9, 0.3], [-0.5, 0.2, 0.8], [0.05, -0.7, 0.4]])


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_sparsify_reexports_the_selection():
    for name in selection.__all__:
        assert name in sp.__all__, name
        assert getattr(sp, name) is getattr(selection, name), name


def test_magnitude_hand_checked_3x3():
    out = sp.magnitude(X, 0.34)  # int(0.34 * 9) = 3: 0.9, 0.8, 0.7
    expected = torch.tensor([[0.0, -0.9, 0.0], [0.0, 0.0, 0.8], [0.0, -0.7, 0.0]])
    assert torch.equal(out, expected)
    assert torch.equal(sp.magnitude(X, 1.0), X)
    assert sp.magnitude(X, 1.0) is not X
    # int(0.1 * 9) = 0, but mergekit 0.1.5 keeps at least one entry: the largest
    assert torch.equal(sp.magnitude(X, 0.1), torch.where(X.abs() == 0.9, X, 0.0))
    assert not sp.magnitude(X, 0.0).any()


def test_magnitude_rescale_matches_l1():
    out = sp.magnitude(X, 0.34, rescale=True)
    assert out.abs().sum() == pytest.approx(float(X.abs().sum()), rel=1e-6)
    assert ((out != 0) == (sp.magnitude(X, 0.34) != 0)).all()


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 60),
    st.floats(0.01, 1.0),
    st.integers(0, 2**31 - 1),
    st.booleans(),
)
def test_topk_mask_keeps_exactly_k_even_with_ties(n, density, seed, quantize):
    x = torch.rand(n, generator=gen(seed))
    if quantize:
        x = (x * 3).round()  # many equal values
    k = sp.keep_count(density, n)
    mask = sp.topk_mask(x, k)
    assert int(mask.sum()) == k
    if 0 < k < n:
        assert x[mask].min() >= x[~mask].max()


def test_keep_count_follows_mergekit_float_rounding():
    assert sp.keep_count(0.29, 100) == 28  # int(28.999999999999996)
    assert sp.keep_count(0.2, 10) == 2
    assert sp.keep_count(1.0, 7) == 7


def test_threshold_prune_and_global_threshold():
    assert torch.equal(sp.threshold_prune(X, 0.7), sp.magnitude(X, 0.34))
    thr = sp.global_threshold(X.abs(), 0.34)
    assert thr == pytest.approx(0.7)
    assert sp.global_threshold(X.abs(), 1.0) == 0.0
    assert sp.global_threshold(X.abs(), 0.01) == float("inf")


def test_random_drop_density_and_rescale():
    x = torch.ones(20000)
    out = sp.random_drop(x, 0.3, gen(0))
    kept = out != 0
    assert abs(float(kept.float().mean()) - 0.3) < 0.02
    assert torch.allclose(out[kept], torch.full_like(out[kept], 1 / 0.3))
    assert torch.equal(sp.random_drop(x, 0.3, gen(0), rescale=False), kept.float())
    assert torch.equal(sp.random_drop(X, 1.0, None), X)
    with pytest.raises(ValueError, match="Generator"):
        sp.random_drop(X, 0.5, None)


def test_random_drop_keeps_expectation():
    mean = torch.stack([sp.random_drop(X, 0.4, gen(s)) for s in range(3000)]).mean(0)
    assert torch.allclose(mean, X, atol=0.05)


def test_breadcrumbs_hand_checked():
    # n=9, density 4/9 -> target int(0.45*9)=4; gamma 0.12 -> n_top=1, n_bot=4:
    # sorted |x|: .05 .1 .2 .3 | .4 .5 .7 .8 | .9 -> keeps .4 .5 .7 .8
    out = sp.magnitude_outliers(X, 0.45, 0.12)
    expected = torch.tensor([[0.0, 0.0, 0.0], [-0.5, 0.0, 0.8], [0.0, -0.7, 0.4]])
    assert torch.equal(out, expected)


def test_breadcrumbs_small_tensor_keeps_largest_when_no_outlier_is_removed():
    # gamma * 9 < 1 -> n_top = 0; mergekit's [n_bot:-0] slice would keep nothing.
    out = sp.magnitude_outliers(X, 0.34, 0.01)
    assert torch.equal(out, sp.magnitude(X, 0.34))


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 300), st.floats(0.05, 0.99), st.floats(0.0, 0.5), st.integers(0, 999))
def test_breadcrumbs_density(n, density, gamma, seed):
    x = torch.randn(n, generator=gen(seed))
    out = sp.magnitude_outliers(x, density, gamma)
    k = int(density * n)  # mergekit's breadcrumbs has no minimum of one
    assert int((out != 0).sum()) == k
    n_top = min(int(gamma * n), n - k)
    if n_top:
        top = torch.topk(x.abs(), n_top).indices
        assert not out[top].any()  # the largest gamma fraction is gone


def test_della_probabilities_and_rescale():
    row = torch.arange(1, 11, dtype=torch.float32).reshape(1, 10)  # ranks 0..9
    draws = torch.stack([sp.della_magprune(row, 0.5, 0.2, gen(s)) for s in range(2000)])
    keep_rate = (draws != 0).float().mean(0).reshape(-1)
    expected = 0.3 + 0.4 * torch.arange(10) / 9  # density - eps ... density + eps
    assert torch.allclose(keep_rate, expected, atol=0.03)
    assert torch.allclose(draws.mean(0), row, rtol=0.08)  # 1/p rescale keeps expectation
    kept = draws[0] != 0
    assert torch.allclose(draws[0][kept], (row / expected.reshape(1, 10))[kept])


def test_della_edge_cases():
    assert torch.equal(sp.della_magprune(X, 1.0, 0.1, None), X)
    with pytest.raises(ValueError, match="epsilon"):
        sp.della_magprune(X, 0.1, 0.15, gen(0))
    one_col = torch.ones(4, 1)
    out = sp.della_magprune(one_col, 0.5, 0.2, gen(1))
    assert torch.isfinite(out).all()  # single-entry rows: p = density, no 0/0
    assert set(out.reshape(-1).tolist()) <= {0.0, 2.0}
    vec = sp.della_magprune(torch.randn(50, generator=gen(2)), 0.5, 0.1, gen(3))
    assert vec.shape == (50,)


def test_nm_mask_full_blocks_and_partial_tail():
    x = torch.tensor([4.0, 1.0, 3.0, 2.0, 0.5, 9.0, 8.0, 7.0, 6.0, 1.0])
    mask = sp.nm_mask(x, 2, 4)
    # blocks [4,1,3,2] -> 4,3 ; [.5,9,8,7] -> 9,8 ; tail [6,1]: round(2*2/4)=1 -> 6
    expected = [1, 0, 1, 0, 0, 1, 1, 0, 1, 0]
    assert mask.tolist() == [bool(v) for v in expected]
    assert sp.nm_mask(torch.ones(3), 1, 4).sum() == 1  # round(0.75) = 1
    assert sp.nm_mask(torch.ones(1), 1, 4).sum() == 0  # round(0.25) = 0
    assert sp.nm_mask(torch.ones(2), 1, 4).sum() == 1  # round(0.5) = 1 (half up)


def test_nm_mask_respects_availability():
    x = torch.tensor([4.0, 1.0, 3.0, 2.0])
    avail = torch.tensor([False, True, False, True])
    assert sp.nm_mask(x, 2, 4, available=avail).tolist() == [False, True, False, True]
    only_one = torch.tensor([False, False, False, True])
    assert sp.nm_mask(x, 2, 4, available=only_one).tolist() == [False, False, False, True]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 8), st.integers(1, 8), st.integers(1, 70), st.integers(0, 999))
def test_nm_mask_obeys_n_of_m_everywhere(n, m, numel, seed):
    n = min(n, m)
    x = torch.rand(numel, generator=gen(seed))
    mask = sp.nm_mask(x, n, m)
    full = numel // m * m
    if full:
        assert (mask[:full].reshape(-1, m).sum(1) == n).all()
    r = numel - full
    assert int(mask[full:].sum()) == (2 * n * r + m) // (2 * m)


@pytest.mark.parametrize("kind", ["normal", "ties", "sorted", "constant"])
@pytest.mark.parametrize("density", [0.001, 0.2, 0.97])
def test_kth_largest_is_exact_on_large_tensors(kind, density):
    n = 70_001  # above the size where kth_largest switches to sampling
    x = torch.randn(n, generator=gen(5)).abs()
    if kind == "ties":
        x = (x * 4).round()
    elif kind == "sorted":
        x = torch.sort(x).values  # a strided sample of sorted data is still unbiased
    elif kind == "constant":
        x = torch.ones(n)
    k = sp.keep_count(density, n)
    assert float(sp.kth_largest(x, k)) == float(torch.kthvalue(x, n - k + 1).values)
    mask = sp.topk_mask(x, k)
    assert int(mask.sum()) == k
    assert x[mask].min() >= x[~mask].max()
