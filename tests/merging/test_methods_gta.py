"""Hand-checked numbers for linear and the generalized task-arithmetic family."""

import pytest
import torch

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
