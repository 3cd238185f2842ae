"""The pure EMoE tensor core: balanced k-means, permutations, avg-k gates, masks."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from modularevo.emoe.split import (
    avg_k_gates,
    balanced_assign,
    balanced_kmeans,
    check_divisible,
    cluster_sizes,
    expert_mask,
    expert_permutation,
    inertia,
    invert_permutation,
    normalize_rows,
    topk_experts,
)
from modularevo.errors import InputError

needs_scipy = pytest.mark.skipif(
    importlib.util.find_spec("scipy") is None, reason="the exact 'lap' assignment needs scipy"
)
METHODS = ["auto", pytest.param("lap", marks=needs_scipy), "greedy"]


def test_normalize_rows_hand_checked():
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.0, -2.0]])
    expected = torch.tensor([[0.6, 0.8], [0.0, 0.0], [0.0, -1.0]])
    torch.testing.assert_close(normalize_rows(x), expected)


def test_avg_k_gates_are_expert_mean_keys():
    keys = torch.tensor([[1.0, 0.0], [3.0, 2.0], [-1.0, 4.0], [5.0, 0.0]])  # (d_ff=4, d=2)
    assert avg_k_gates(keys, 2).tolist() == [[2.0, 1.0], [2.0, 2.0]]
    assert avg_k_gates(keys, 1).tolist() == [[2.0, 1.5]]


def test_expert_mask_hand_checked():
    logits = torch.tensor([[0.1, 0.9, 0.5], [2.0, -1.0, 0.0]])
    mask = expert_mask(logits, top_k=2, expert_size=2)
    assert mask.tolist() == [[0, 0, 1, 1, 1, 1], [1, 1, 0, 0, 1, 1]]
    assert expert_mask(logits, top_k=3, expert_size=2).eq(1).all()


def test_balanced_kmeans_finds_obvious_groups():
    pts = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [5.0, 5.0], [5.1, 5.0], [5.0, 5.1]])
    labels = balanced_kmeans(pts, 2, seed=0)
    assert labels[0] == labels[1] == labels[2]
    assert labels[3] == labels[4] == labels[5] != labels[0]


@pytest.mark.parametrize("method", METHODS)
def test_balanced_kmeans_forces_equal_sizes_on_unequal_groups(method):
    # natural groups have 4 and 2 points; equal-size clustering must give 3 and 3
    pts = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [0.1, 0.1], [5.0, 5.0], [5.1, 5.0]])
    labels = balanced_kmeans(pts, 2, seed=0, method=method)
    assert cluster_sizes(labels, 2).tolist() == [3, 3]
    assert labels[4] == labels[5]


@pytest.mark.parametrize("method", METHODS)
def test_cluster_sizes_equal_and_seed_deterministic(method):
    pts = normalize_rows(torch.randn(96, 8, generator=torch.Generator().manual_seed(1)))
    a = balanced_kmeans(pts, 8, seed=3, method=method)
    b = balanced_kmeans(pts, 8, seed=3, method=method)
    assert torch.equal(a, b)
    assert cluster_sizes(a, 8).tolist() == [12] * 8


def test_balanced_kmeans_beats_random_partition():
    pts = normalize_rows(torch.randn(64, 6, generator=torch.Generator().manual_seed(2)))
    labels = balanced_kmeans(pts, 4, seed=0)
    random = torch.arange(64) % 4
    assert inertia(pts, labels, 4) < inertia(pts, random, 4)


@needs_scipy
def test_lap_is_optimal_where_greedy_is_not():
    cost = torch.tensor([[0.0, 1.0], [0.0, 10.0]])
    # greedy takes the cheapest pair first (point 0 -> cluster 0), leaving cost 10
    assert balanced_assign(cost, 1, method="greedy").tolist() == [0, 1]
    assert balanced_assign(cost, 1, method="lap").tolist() == [1, 0]  # total cost 1


def test_expert_permutation_and_inverse():
    labels = torch.tensor([1, 0, 1, 0])
    perm = expert_permutation(labels, 2)
    assert perm.tolist() == [1, 3, 0, 2]
    inv = invert_permutation(perm)
    assert inv.tolist() == [2, 0, 3, 1]
    assert torch.equal(perm[inv], torch.arange(4))


def test_not_divisible_error_says_what_and_how():
    with pytest.raises(InputError, match=r"64 neurons into 5 .*does not divide 64.*\[2, 4, 8"):
        check_divisible(64, 5)
    with pytest.raises(InputError, match="does not divide"):
        balanced_kmeans(torch.randn(10, 2), 3)


def test_unequal_labels_and_bad_k_rejected():
    with pytest.raises(InputError, match=r"expert sizes must all be 2, got \[3, 1\]"):
        expert_permutation(torch.tensor([0, 0, 0, 1]), 2)
    with pytest.raises(InputError, match=r"top_k must be in \[1, 3\].*got 4"):
        topk_experts(torch.zeros(2, 3), 4)
    with pytest.raises(InputError, match="unknown assignment method"):
        balanced_assign(torch.zeros(2, 2), 1, method="magic")  # type: ignore[arg-type]
