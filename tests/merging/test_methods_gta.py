"""Hand-checked numbers for linear and the generalized task-arithmetic family."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from modularevo.errors import InputError
from modularevo.merging import MERGE_METHODS
from modularevo.merging.consensus import agreement_mask, elect_sign, merge_deltas


def fn(name):
    return MERGE_METHODS.get(name).fn


BASE = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [2.0, 2.0, 2.0]])
TAU_A = torch.tensor([[0.5, -0.2, 0.0], [1.0, 0.1, -3.0], [0.0, 0.3, 0.4]])
TAU_B = torch.tensor([[-0.1, -0.4, 0.2], [2.0, -0.3, 1.0], [0.6, 0.0, -0.1]])


def test_linear_weighted_average_and_unnormalized_sum():
    a, b = torch.full((3, 3), 1.0), torch.full((3, 3), 4.0)
    assert torch.equal(fn("linear")([a, b], None, weight=[1.0, 2.0]), torch.full((3, 3), 3.0))
    out = fn("linear")([a, b], None, weight=[1.0, 2.0], normalize=False)
    assert torch.equal(out, torch.full((3, 3), 9.0))


def test_linear_zero_weight_sum_is_a_clear_error():
    a = torch.ones(2)
    with pytest.raises(InputError, match="sum to"):
        fn("linear")([a, a], None, weight=[1.0, -1.0])


def test_task_arithmetic_hand_checked():
    out = fn("task_arithmetic")([BASE + TAU_A, BASE + TAU_B], BASE, weight=[0.5, 2.0])
    assert torch.allclose(out, BASE + 0.5 * TAU_A + 2.0 * TAU_B)
    out = fn("task_arithmetic")([BASE + TAU_A], BASE, weight=[1.0], **{"lambda": 0.5})
    assert torch.allclose(out, BASE + 0.5 * TAU_A)


def test_task_arithmetic_normalize_divides_by_weight_sum():
    out = fn("task_arithmetic")(
        [BASE + TAU_A, BASE + TAU_B], BASE, weight=[1.0, 3.0], normalize=True
    )
    assert torch.allclose(out, BASE + (TAU_A + 3 * TAU_B) / 4)


def test_ties_hand_checked_3x3():
    # density 5/9 -> int(0.56 * 9) = 5 entries kept per model.
    # |TAU_A| top 5: 3.0, 1.0, 0.5, 0.4, 0.3   |TAU_B| top 5: 2.0, 1.0, 0.6, 0.4, 0.3
    out = fn("ties")([BASE + TAU_A, BASE + TAU_B], BASE, density=0.56)
    expected_delta = torch.tensor(
        [
            [0.5, -0.4, 0.0],  # a 0.5 alone; b -0.4 alone; a 0 / b 0.2 trimmed
            [1.5, -0.3, -3.0],  # (1 + 2)/2; b -0.3 alone; sum -3+1<0 -> a only
            [0.6, 0.3, 0.4],  # b alone; a alone; a 0.4 (b -0.1 trimmed)
        ]
    )
    assert torch.allclose(out, BASE + expected_delta)


def test_ties_normalize_false_sums_agreeing_entries():
    out = fn("ties")([BASE + TAU_A, BASE + TAU_B], BASE, density=1.0, normalize=False)
    # (0,1): -0.2 and -0.4 agree -> -0.6; (1,2): -3 + 1 < 0 -> -3 only
    assert out[0, 1] - BASE[0, 1] == pytest.approx(-0.6)
    assert out[1, 2] - BASE[1, 2] == pytest.approx(-3.0)


def test_ties_weighted_mean_uses_agreeing_weights():
    out = fn("ties")([BASE + TAU_A, BASE + TAU_B], BASE, weight=[1.0, 3.0])
    # (1,0): 1*1 + 3*2 over weights 4 -> 1.75 ; (1,2): 1*-3 vs 3*1: sum 0 -> elect +, b only
    assert out[1, 0] - BASE[1, 0] == pytest.approx(1.75)
    assert out[1, 2] - BASE[1, 2] == pytest.approx(1.0)


def test_ties_global_scope_uses_thresholds_only():
    out = fn("ties")([BASE + TAU_A, BASE + TAU_B], BASE, trim_scope="global", thresholds=[1.0, 5.0])
    # a keeps |τ| >= 1: 1.0 and -3.0 ; b keeps nothing
    expected = torch.zeros(3, 3)
    expected[1, 0], expected[1, 2] = 1.0, -3.0
    assert torch.allclose(out, BASE + expected)
    with pytest.raises(ValueError, match="thresholds"):
        fn("ties")([BASE + TAU_A], BASE, trim_scope="global")


def test_consensus_helpers():
    w = torch.stack([TAU_A, TAU_B])
    assert torch.equal(elect_sign(w)[1, 2], torch.tensor(-1.0))
    assert torch.equal(elect_sign(w)[0, 2], torch.tensor(1.0))
    agree = agreement_mask(w)
    assert not agree[0, 0, 2]  # zero never agrees
    count = elect_sign(torch.stack([TAU_A, TAU_B, TAU_B * 0 + 0.01]), "count")
    assert count[1, 2] == 1.0  # two positive votes beat one large negative
    with pytest.raises(ValueError, match="consensus"):
        elect_sign(w, "vote")  # type: ignore[arg-type]
    zero_w = merge_deltas(w, torch.tensor([1.0, -1.0]), consensus=None, normalize=True)
    assert torch.allclose(zero_w, TAU_A + TAU_B)  # divisor ~0 -> 1


# ---------------------------------------------------------------- equivalences

SIGNED = st.lists(st.floats(0.01, 3.0), min_size=6, max_size=6)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(SIGNED, min_size=1, max_size=4),
    st.lists(st.booleans(), min_size=6, max_size=6),
    st.lists(st.floats(0.1, 2.0), min_size=4, max_size=4),
    st.booleans(),
)
def test_ties_with_agreeing_signs_and_density_1_equals_task_arithmetic(
    mags, signs, weights, normalize
):  # fmt: skip
    sign = torch.tensor([1.0 if s else -1.0 for s in signs])
    base = torch.linspace(-1, 1, 6)
    ts = [base + sign * torch.tensor(m) for m in mags]
    w = weights[: len(ts)]
    ties = fn("ties")(ts, base, weight=w, normalize=normalize)
    ta = fn("task_arithmetic")(ts, base, weight=w, normalize=normalize)
    assert torch.allclose(ties, ta, atol=1e-5)


@pytest.mark.parametrize("name", ["dare_linear", "dare_ties", "della_linear", "della"])
def test_random_methods_at_density_1_equal_their_deterministic_counterpart(name):
    ts = [BASE + TAU_A, BASE + TAU_B]
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    out = fn(name)(ts, BASE, generators=gens, weight=[0.6, 1.2], density=1.0)
    ref = "ties" if name in ("dare_ties", "della") else "task_arithmetic"
    normalize = name == "della"
    expected = fn(ref)(ts, BASE, weight=[0.6, 1.2], normalize=normalize)
    assert torch.allclose(out, expected)


@pytest.mark.parametrize(("name", "extra"), [("dare_linear", {}), ("della_linear",
                         {"epsilon": 0.2})])  # fmt: skip
def test_random_drop_keeps_the_task_arithmetic_expectation(name, extra):
    ts = [BASE + TAU_A, BASE + TAU_B]
    w = [0.6, 1.2]
    runs = []
    for s in range(1000):
        gens = [torch.Generator().manual_seed(2 * s + i) for i in range(2)]
        runs.append(fn(name)(ts, BASE, generators=gens, weight=w, density=0.5,
                             rescale="inverse_p", **extra))  # fmt: skip
    ta = fn("task_arithmetic")(ts, BASE, weight=w)
    assert torch.allclose(torch.stack(runs).mean(0), ta, atol=0.15)


def test_dare_drops_about_one_minus_density_per_model():
    base = torch.zeros(4000)
    t = torch.ones(4000)
    out = fn("dare_linear")([t], base, generators=[torch.Generator().manual_seed(0)],
                            density=0.25, rescale="inverse_p")  # fmt: skip
    assert abs(float((out != 0).float().mean()) - 0.25) < 0.03
    assert torch.allclose(out[out != 0], torch.tensor(4.0))


def test_breadcrumbs_and_della_density_through_the_method():
    base = torch.zeros(1000)
    t = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    bc = fn("breadcrumbs")([t], base, density=0.3, gamma=0.05)
    assert int((bc != 0).sum()) == 300
    assert not bc[torch.topk(t.abs(), 50).indices].any()
    gens = [torch.Generator().manual_seed(1)]
    de = fn("della_linear")([t], base, generators=gens, density=0.3, epsilon=0.1)
    assert abs(float((de != 0).float().mean()) - 0.3) < 0.04


def test_della_lambda_scales_last():
    ts = [BASE + TAU_A, BASE + TAU_B]
    gens = lambda: [torch.Generator().manual_seed(i) for i in range(2)]  # noqa: E731
    one = fn("della")(ts, BASE, generators=gens(), density=0.5, epsilon=0.1)
    half = fn("della")(ts, BASE, generators=gens(), density=0.5, epsilon=0.1,
                       **{"lambda": 0.5})  # fmt: skip
    assert torch.allclose(half - BASE, 0.5 * (one - BASE))
