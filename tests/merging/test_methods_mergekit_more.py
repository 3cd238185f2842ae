"""Hand-checked tensors for the methods taken from mergekit 0.1.5: nearswap, sce,
nuslerp, multislerp, karcher, arcee_fusion (each also compared with mergekit 0.1.5 on
12-layer llama-shaped models: bit-identical)."""

import math

import pytest
import torch

from modularevo.errors import InputError
from modularevo.merging import MERGE_METHODS

R = math.sqrt(0.5)


def fn(name):
    return MERGE_METHODS.get(name).fn


def test_nearswap_moves_by_t_over_the_difference():
    base = torch.zeros(3)
    model = torch.tensor([0.1, 1.0, -4.0])
    out = fn("nearswap")([model], base, t=0.5)  # w = 1, 0.5, 0.125
    torch.testing.assert_close(out, torch.tensor([0.1, 0.5, -0.5]))


def test_sce_weights_by_mean_square_and_erases_minority_signs():
    base = torch.zeros(2)
    a, b = torch.tensor([1.0, -2.0]), torch.tensor([3.0, 1.0])
    # elected signs (+, -); weights 2.5 : 5 → 1/3, 2/3; b's +1 disagrees in entry 1
    out = fn("sce")([a, b], base)
    torch.testing.assert_close(out, torch.tensor([7 / 3, -2.0]))
    # select_topk keeps the highest-variance entries: var = (1, 2.25) → entry 1 only
    out = fn("sce")([a, b], base, select_topk=0.5)
    torch.testing.assert_close(out, torch.tensor([0.0, -2.0]))


def test_nuslerp_midpoint_of_orthogonal_vectors_and_task_vectors():
    x, y = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    torch.testing.assert_close(fn("nuslerp")([x, y], None, weight=[1.0, 1.0]), torch.tensor([R, R]))
    t = 0.25  # weight 1 : 3 → t = 3/4 towards y
    out = fn("nuslerp")([x, y], None, weight=[1.0, 3.0])
    torch.testing.assert_close(
        out, torch.tensor([math.sin(t * math.pi / 2), math.sin(3 * t * math.pi / 2)])
    )
    base = torch.tensor([5.0, 5.0])
    out = fn("nuslerp")([base + x, base + y], base, weight=[1.0, 1.0])
    torch.testing.assert_close(out, base + torch.tensor([R, R]))


def test_nuslerp_row_wise_interpolates_each_column():
    x = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    y = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    out = fn("nuslerp")([x, y], None, weight=[1.0, 1.0], nuslerp_flatten=False,
                        nuslerp_row_wise=True)  # fmt: skip
    torch.testing.assert_close(out, torch.tensor([[R, 2 * R], [R, 2 * R]]))


def test_multislerp_and_karcher_midpoint_of_orthogonal_vectors():
    x, y = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    torch.testing.assert_close(fn("multislerp")([x, y], None), torch.tensor([R, R]))
    torch.testing.assert_close(fn("karcher")([x, y], None), torch.tensor([R, R]))
    # scaled by the weighted mean norm: |2x| = 2, |y| = 1 → 1.5
    torch.testing.assert_close(fn("karcher")([2 * x, y], None), 1.5 * torch.tensor([R, R]))


def test_multislerp_with_a_base_and_opposite_task_vectors():
    base = torch.ones(2)
    x = torch.tensor([1.0, 0.0])
    # two opposite task vectors: mergekit's linear fallback, Σ w_t τ_t = 0
    torch.testing.assert_close(fn("multislerp")([base + x, base - x], base), base)
    with pytest.raises(InputError, match="weighted mean"):
        fn("multislerp")([base + x, base - x, base + x, base - x], base)
    # no model changes the tensor: the base (mergekit raises)
    torch.testing.assert_close(fn("multislerp")([base, base, base], base), base)


def test_arcee_fusion_keeps_only_outlier_changes():
    base = torch.zeros(8)
    delta = torch.tensor([1.0, 2, 3, 4, 5, 6, 7, 50])
    # sorted importances at int(q·7) = 1, 3, 5: 2, 4, 6 (times the row's KL) → fence 10
    out = fn("arcee_fusion")([base + delta], base)
    torch.testing.assert_close(out, torch.tensor([0.0] * 7 + [50.0]))


def test_ram_keeps_unique_changes_and_averages_shared_ones():
    base = torch.zeros(3)
    a = torch.tensor([1.0, 2.0, 0.0])
    b = torch.tensor([0.0, 4.0, 0.0])
    torch.testing.assert_close(fn("ram")([a, b], base), torch.tensor([1.0, 3.0, 0.0]))
    # ramplus_tl: a has 1 shared and 1 unique entry → ρ = 1, λ = 1 + 0.1·min(1, 0.2) = 1.02
    out = fn("ramplus_tl")([a, b], base)
    torch.testing.assert_close(out, torch.tensor([1.02, 3.0, 0.0]))
