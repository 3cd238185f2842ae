"""CABS, ModularEvo, slerp and Model Stock: hand-checked values and invariants."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from modularevo.errors import InputError
from modularevo.merging import MERGE_METHODS
from modularevo.merging.methods.cabs import cabs_masks, resolve_order
from modularevo.merging.methods.model_stock import stock_ratio
from modularevo.merging.methods.slerp import slerp_tensors


def fn(name):
    return MERGE_METHODS.get(name).fn


def rand(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- CABS


def test_cabs_hand_checked_two_tasks():
    base = torch.zeros(8)
    ta = torch.tensor([5.0, 1.0, 4.0, 2.0, 1.0, 2.0, 3.0, 4.0])
    tb = torch.tensor([6.0, 3.0, 1.0, -2.5, 9.0, 8.0, 0.5, 0.1])
    out = fn("cabs")([ta, tb], base, n=2, m=4, weight=[1.0, 10.0])
    # A keeps 5,4 | 3,4 ; B on the rest: {3,-2.5} | {9,8}
    expected = torch.tensor([5.0, 30.0, 4.0, -25.0, 90.0, 80.0, 3.0, 4.0])
    assert torch.equal(out, expected)
    swapped = fn("cabs")([ta, tb], base, n=2, m=4, weight=[1.0, 10.0], order=[1, 0])
    # B first: 6,3 | 9,8 ; A on the rest: 4,2 | 3,4
    assert torch.equal(swapped, torch.tensor([60.0, 30.0, 4.0, 2.0, 90.0, 80.0, 3.0, 4.0]))


@settings(max_examples=40, deadline=None)
@given(
    st.integers(2, 5), st.integers(1, 4), st.integers(2, 8), st.integers(1, 50),
    st.integers(0, 999),
)  # fmt: skip
def test_cabs_supports_disjoint_and_n_of_m(k, n, m, numel, seed):
    n = min(n, m)
    deltas = [rand(numel, seed + i) for i in range(k)]
    order = list(range(k))[::-1] if seed % 2 else list(range(k))
    masks = cabs_masks(deltas, n, m, order)
    total = torch.stack(masks).sum(0)
    assert int(total.max()) <= 1  # pairwise disjoint
    full = numel // m * m
    for mk in masks:
        if full:
            assert (mk[:full].reshape(-1, m).sum(1) <= n).all()
    if full:
        # model picked first gets exactly n per block; the union has min(k*n, m) per block
        assert (masks[order[0]][:full].reshape(-1, m).sum(1) == n).all()
        union = total[:full].reshape(-1, m).sum(1)
        assert (union == min(k * n, m)).all()


def test_cabs_merge_is_base_plus_masked_deltas():
    base = rand((4, 6), 0)
    ts = [base + rand((4, 6), i + 1) for i in range(3)]
    out = fn("cabs")(ts, base, n=1, m=3, weight=[0.5, 1.0, 2.0], order=[2, 0, 1])
    masks = cabs_masks([t - base for t in ts], 1, 3, [2, 0, 1])
    expected = base.clone()
    for w, t, mk in zip([0.5, 1.0, 2.0], ts, masks, strict=True):
        expected += w * (t - base) * mk
    assert torch.allclose(out, expected)
    with pytest.raises(ValueError, match="order"):
        resolve_order([0, 0, 1], 3)
    assert resolve_order([], 3) == [0, 1, 2]
    with pytest.raises(ValueError, match="n <= m"):
        fn("cabs")(ts, base, n=5, m=4)


# ---------------------------------------------------------------- ModularEvo


def test_modularevo_full_masks_equal_task_arithmetic():
    base = rand((3, 3), 0)
    ts = [base + rand((3, 3), i) for i in (1, 2)]
    full = [torch.ones(3, 3, dtype=torch.bool)] * 2
    w = [0.7, 0.9]
    ta = fn("task_arithmetic")(ts, base, weight=w)
    assert torch.allclose(fn("modularevo")(ts, base, masks=full, weight=w), ta)
    assert torch.allclose(fn("modularevo")(ts, base, masks=None, weight=w), ta)
    assert torch.allclose(fn("modularevo")(ts, base, masks=[None, full[1]], weight=w), ta)


def test_modularevo_masks_hand_checked_sum_and_mean():
    base = torch.zeros(3, 3)
    ta, tb = torch.full((3, 3), 1.0), torch.full((3, 3), 4.0)
    ma = torch.tensor([[1, 1, 0], [0, 0, 0], [1, 0, 0]], dtype=torch.bool)
    mb = torch.tensor([[0, 1, 1], [0, 0, 0], [1, 0, 0]], dtype=torch.bool)
    out = fn("modularevo")([ta, tb], base, masks=[ma, mb], weight=[1.0, 0.5])
    expected = torch.tensor([[1.0, 3.0, 2.0], [0.0, 0.0, 0.0], [3.0, 0.0, 0.0]])
    assert torch.equal(out, expected)
    mean = fn("modularevo")([ta, tb], base, masks=[ma, mb], weight=[1.0, 0.5], overlap="mean")
    expected[0, 1] = expected[2, 0] = 1.5  # (1 + 2) / 2 modules
    assert torch.equal(mean, expected)
    # 0/1 float masks work like bool masks
    assert torch.equal(
        fn("modularevo")([ta, tb], base, masks=[ma.float(), mb.float()], weight=[1.0, 0.5]),
        out,
    )


def test_modularevo_leaves_out_of_mask_entries_at_base():
    base = rand((5, 4), 3)
    ts = [base + rand((5, 4), i) for i in (4, 5)]
    masks = [rand((5, 4), 6) > 0.5, rand((5, 4), 7) > 0.5]
    out = fn("modularevo")(ts, base, masks=masks, weight=[1.3, 0.4])
    outside = ~(masks[0] | masks[1])
    assert torch.equal(out[outside], base[outside])
    only_a = masks[0] & ~masks[1]
    assert torch.allclose(out[only_a], (base + 1.3 * (ts[0] - base))[only_a])


def test_modularevo_mask_shape_error_names_shapes():
    base = torch.zeros(3, 3)
    with pytest.raises(InputError, match=r"shape \(3, 2\).*\(3, 3\)"):
        fn("modularevo")([base], base, masks=[torch.ones(3, 2, dtype=torch.bool)])


# ---------------------------------------------------------------- slerp


def test_slerp_endpoints_and_midpoint():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    assert torch.allclose(slerp_tensors(0.0, a, b), a)
    assert torch.allclose(slerp_tensors(1.0, a, b), b)
    mid = slerp_tensors(0.5, a, b)  # sin(π/4)/sin(π/2) = √2/2 on each raw tensor
    assert torch.allclose(mid, torch.tensor([math.sqrt(0.5), 2 * math.sqrt(0.5)]))
    out = fn("slerp")([b], a, t=0.5)  # base + one model: base is the t=0 end
    assert torch.allclose(out, mid)
    assert torch.allclose(fn("slerp")([a, b], None, t=0.5), mid)


def test_slerp_colinear_falls_back_to_lerp():
    a = torch.tensor([1.0, 2.0, 3.0])
    assert torch.allclose(slerp_tensors(0.25, a, 3 * a), 0.75 * a + 0.25 * 3 * a)


def test_slerp_with_a_zero_end_follows_the_circle_as_mergekit():
    """mergekit 0.1.5 does not normalize a zero tensor: cos = 0, Ω = π/2, so the result
    is sin(tπ/2)·a (0.7071·a at t = 0.5), not the straight line 0.5·a."""
    a = torch.tensor([1.0, 2.0, 3.0])
    zero = torch.zeros(3)
    torch.testing.assert_close(slerp_tensors(0.5, zero, a), math.sin(math.pi / 4) * a)
    torch.testing.assert_close(slerp_tensors(0.25, a, zero), math.sin(0.75 * math.pi / 2) * a)


def test_slerp_needs_exactly_two_endpoints():
    a = torch.ones(3)
    with pytest.raises(InputError, match="exactly 2"):
        fn("slerp")([a, a], a, t=0.5)
    with pytest.raises(InputError, match="exactly 2"):
        fn("slerp")([a], None, t=0.5)


# ---------------------------------------------------------------- Model Stock


def test_stock_ratio_known_values():
    assert float(stock_ratio(torch.tensor(1.0), 2)) == pytest.approx(1.0)
    assert float(stock_ratio(torch.tensor(0.0), 3)) == 0.0
    assert float(stock_ratio(torch.tensor(0.5), 2)) == pytest.approx(2 / 3)
    assert float(stock_ratio(torch.tensor(0.5), 3)) == pytest.approx(0.75)
    assert float(stock_ratio(torch.tensor(-1.0), 2)) == 0.0  # 1 + (k-1)cos = 0 -> base


def test_model_stock_hand_checked_60_degrees():
    base = torch.zeros(2, 2)
    t1 = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    t2 = torch.tensor([[0.5, math.sqrt(3) / 2], [0.0, 0.0]])  # cos = 0.5 -> t = 2/3
    out = fn("model_stock")([t1, t2], base)
    assert torch.allclose(out, (2 / 3) * (t1 + t2) / 2)
    # orthogonal deltas -> base
    t3 = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    assert torch.allclose(fn("model_stock")([t1, t3], base), base)


def test_model_stock_filter_wise_uses_one_angle_per_row():
    base = torch.zeros(2, 2)
    t1 = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    t2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # row 0 parallel, row 1 orthogonal
    out = fn("model_stock")([t1, t2], base, filter_wise=True)
    assert torch.allclose(out, torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    bias = fn("model_stock")([t1[0], t2[0]], base[0], filter_wise=True)
    assert torch.allclose(bias, torch.tensor([1.0, 0.0]))
