"""MwT loss core and module metrics, with numbers checked by hand."""

import math

import pytest
import torch

from modularevo.mwt.losses import (
    class_kernel_frequency,
    cohesion_coupling_losses,
    jaccard_matrix,
    keep_kernels,
    kernel_rate,
    mwt_loss,
    pair_similarity,
)
from modularevo.mwt.reuse import kernel_retention_rate, module_keep

R2 = 1 / math.sqrt(2)


def test_pair_similarity_hand_checked_three_samples() -> None:
    # rows a=(1,0), b=(1,1), c=(0,1); labels 0,0,1.
    # pairs: (a,b) same: cos = 1/sqrt2; (a,c) cross: 0; (b,c) cross: 1/sqrt2.
    gates = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    sims = pair_similarity(gates, torch.tensor([0, 0, 1]))
    assert sims.same_pairs == 1
    assert sims.cross_pairs == 2
    assert float(sims.cohesion) == pytest.approx(R2)
    assert float(sims.coupling) == pytest.approx(R2 / 2)


def test_pair_similarity_hand_checked_scaled_rows() -> None:
    # Cosine ignores scale: (2,0,0) vs (0.5,0,0) is 1; (0,3,4) vs (2,0,0) is 0;
    # (0,3,4) vs (0.5,0,0) is 0. Labels 1,1,0 -> cohesion 1, coupling 0.
    gates = torch.tensor([[2.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 3.0, 4.0]])
    sims = pair_similarity(gates, torch.tensor([1, 1, 0]))
    assert float(sims.cohesion) == pytest.approx(1.0)
    assert float(sims.coupling) == pytest.approx(0.0)


def test_cohesion_coupling_losses_average_over_layers() -> None:
    labels = torch.tensor([0, 0, 1])
    layer1 = torch.tensor(
        [[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
    )  # cohesion 1/sqrt2, coupling 1/(2 sqrt2)
    layer2 = torch.tensor([[1.0], [1.0], [1.0]])  # cohesion 1, coupling 1
    coh_loss, cpl_loss = cohesion_coupling_losses([layer1, layer2], labels)
    assert float(coh_loss) == pytest.approx(1 - (R2 + 1) / 2)
    assert float(cpl_loss) == pytest.approx((R2 / 2 + 1) / 2)


def test_identical_gates_give_maximal_coupling_and_cohesion() -> None:
    labels = torch.tensor([0, 1, 2, 0, 1])
    same = torch.rand(1, 6).expand(5, 6) + 0.1
    coh_loss, cpl_loss = cohesion_coupling_losses([same], labels)
    assert float(cpl_loss) == pytest.approx(1.0)  # the largest cosine there is
    assert float(coh_loss) == pytest.approx(0.0, abs=1e-6)
    random_gates = torch.rand(5, 6)
    assert float(cohesion_coupling_losses([random_gates], labels)[1]) <= 1.0 + 1e-6


def test_all_zero_rows_and_missing_pairs_give_no_nan() -> None:
    gates = torch.tensor([[0.0, 0.0], [1.0, 0.0]], requires_grad=True)
    sims = pair_similarity(gates, torch.tensor([0, 1]))  # one cross pair, no same-class pair
    assert sims.same_pairs == 0
    assert float(sims.cohesion.detach()) == 0.0
    assert float(sims.coupling.detach()) == 0.0
    coh, cpl = cohesion_coupling_losses([gates], torch.tensor([0, 1]))
    (coh + cpl).backward()
    assert gates.grad is not None
    assert torch.isfinite(gates.grad).all()
    assert float(coh.detach()) == 0.0


def test_mwt_loss_is_ce_plus_weighted_terms() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    gates = [torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])]
    loss = mwt_loss(logits, labels, gates, alpha=0.5, beta=1.5)
    ce = torch.nn.functional.cross_entropy(logits, labels)
    assert float(loss.ce) == pytest.approx(float(ce))
    expected = float(ce) + 0.5 * (1 - R2) + 1.5 * (R2 / 2)
    assert float(loss.total) == pytest.approx(expected)
    assert float(loss.kernel_rate) == pytest.approx(4 / 6)


def test_shape_errors_say_what_was_found() -> None:
    with pytest.raises(ValueError, match=r"got \(3,\) and \(3,\)"):
        pair_similarity(torch.ones(3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="no gated layer"):
        cohesion_coupling_losses([], torch.zeros(2, dtype=torch.long))


def test_class_frequency_and_kept_kernels_hand_checked() -> None:
    gates = torch.tensor([[0.5, 0.0, 0.2], [0.1, 0.0, 0.0], [0.0, 0.9, 0.0], [0.0, 0.3, 0.0]])
    labels = torch.tensor([0, 0, 1, 1])
    freq = class_kernel_frequency(gates, labels, num_classes=3)
    expected = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(freq, expected)
    keep = keep_kernels(freq, 0.9)
    # class 2 has no samples: no kernel reaches 0.9, so it keeps its most used ones (all tied).
    assert keep.tolist() == [[True, False, False], [False, True, False], [True, True, True]]
    assert keep_kernels(freq, 0.5)[0].tolist() == [True, False, True]
    with pytest.raises(ValueError, match="threshold must lie in"):
        keep_kernels(freq, 0.0)


def test_keep_kernels_never_leaves_a_class_empty() -> None:
    freq = torch.tensor([[0.2, 0.6, 0.6, 0.1]])
    assert keep_kernels(freq, 0.9).tolist() == [[False, True, True, False]]


def test_jaccard_hand_checked() -> None:
    a = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    b = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 0]], dtype=torch.bool)
    jac = jaccard_matrix(a, b)
    torch.testing.assert_close(jac, torch.tensor([[1 / 3, 0.0], [0.0, 1.0]]))


def test_krr_of_all_ones_is_one_and_union_of_modules() -> None:
    ones = {"a": torch.ones(3, 4, dtype=torch.bool), "b": torch.ones(3, 2, dtype=torch.bool)}
    assert kernel_retention_rate(ones) == 1.0
    masks = {"a": torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0]], dtype=torch.bool)}
    assert kernel_retention_rate(masks) == pytest.approx(0.25)  # each class keeps 1 of 4
    keep = module_keep(masks, [0, 1])
    assert keep["a"].tolist() == [0, 1]
    assert float(kernel_rate([torch.tensor([[0.0, 0.5]])])) == 0.5
