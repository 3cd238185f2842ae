"""TSV-M, Iso-C, Iso-CTS and MagMax on hand-computed matrices."""

from __future__ import annotations

import pytest
import torch

from modularevo.merging import MERGE_METHODS
from modularevo.merging.methods.magmax import max_magnitude
from modularevo.merging.methods.spectral import common_size, nearest_orthogonal


def _call(name: str, taus: list[torch.Tensor], base: torch.Tensor, **params) -> torch.Tensor:
    spec = MERGE_METHODS.get(name)
    models = [base + t for t in taus]
    return spec.fn(models, base, generators=None, masks=None, thresholds=None, **params)


def test_iso_c_flattens_the_spectrum_of_the_sum():
    base = torch.ones(2, 2)
    out = _call(
        "iso_c", [torch.diag(torch.tensor([3.0, 0.0])), torch.diag(torch.tensor([0.0, 1.0]))], base
    )
    torch.testing.assert_close(out, base + 2 * torch.eye(2))  # σ = (3, 1) -> (2, 2)


def test_tsv_m_of_tasks_in_disjoint_subspaces_is_task_arithmetic():
    base = torch.randn(4, 4, generator=torch.Generator().manual_seed(0))
    t1 = torch.diag(torch.tensor([2.0, 1.0, 0.0, 0.0]))
    t2 = torch.diag(torch.tensor([0.0, 0.0, 3.0, 4.0]))
    torch.testing.assert_close(_call("tsv_m", [t1, t2], base), base + t1 + t2)


def test_tsv_m_removes_the_overlap_of_two_tasks():
    # two rank-1 tasks along nearly the same direction: task arithmetic doubles it, TSV-M
    # keeps two orthogonal directions with the tasks' own singular values
    base = torch.zeros(3, 3)
    a = torch.tensor([1.0, 0.0, 0.0])
    b = torch.nn.functional.normalize(torch.tensor([1.0, 0.1, 0.0]), dim=0)
    t1, t2 = 2 * torch.outer(a, a), 2 * torch.outer(b, b)
    out = _call("tsv_m", [t1, t2], base)
    sv = torch.linalg.svdvals(out)
    torch.testing.assert_close(sv[:2], torch.tensor([2.0, 2.0]), atol=1e-5, rtol=0)
    assert torch.linalg.svdvals(t1 + t2)[0] > 3.9  # what task arithmetic does instead


def test_iso_cts_without_task_directions_is_iso_c():
    g = torch.Generator().manual_seed(1)
    base = torch.randn(6, 6, generator=g)
    taus = [torch.randn(6, 6, generator=g) for _ in range(3)]
    assert common_size(6, 3, 0.99) == (6, 0)
    cts = _call("iso_cts", taus, base, common_fraction=0.99)
    torch.testing.assert_close(cts, _call("iso_c", taus, base))


def test_iso_cts_block_sizes_follow_fusionbench():
    assert common_size(384, 4, 0.8) == (308, 19)  # int(307.2)=307 -> 77 task dims -> 19 each
    assert common_size(5, 3, 0.1) == (2, 1)  # never a negative common subspace


def test_vectors_and_biases_take_the_mean_task_vector():
    base = torch.zeros(3)
    out = _call("iso_c", [torch.tensor([1.0, 2.0, 3.0]), torch.tensor([3.0, 2.0, 1.0])], base)
    torch.testing.assert_close(out, torch.tensor([2.0, 2.0, 2.0]))


def test_nearest_orthogonal_is_orthogonal():
    m = torch.randn(5, 3, generator=torch.Generator().manual_seed(2))
    q = nearest_orthogonal(m)
    torch.testing.assert_close(q.T @ q, torch.eye(3), atol=1e-5, rtol=0)


def test_magmax_keeps_the_largest_magnitude_per_entry():
    taus = [torch.tensor([1.0, -3.0, 2.0]), torch.tensor([-2.0, 2.0, -2.0])]
    torch.testing.assert_close(max_magnitude(taus), torch.tensor([-2.0, -3.0, 2.0]))  # tie: first
    out = _call("magmax", taus, torch.zeros(3), **{"lambda": 0.5})
    torch.testing.assert_close(out, torch.tensor([-1.0, -1.5, 1.0]))


def test_magmax_merged_one_model_at_a_time_equals_merged_at_once():
    g = torch.Generator().manual_seed(3)
    taus = [torch.randn(4, 4, generator=g) for _ in range(3)]
    torch.testing.assert_close(
        max_magnitude([max_magnitude(taus[:2]), taus[2]]), max_magnitude(taus)
    )


@pytest.mark.parametrize("name", ["tsv_m", "iso_c", "iso_cts"])
def test_spectral_methods_scale_with_lambda(name):
    g = torch.Generator().manual_seed(4)
    base = torch.randn(8, 6, generator=g)
    taus = [torch.randn(8, 6, generator=g) for _ in range(2)]
    one = _call(name, taus, base) - base
    half = _call(name, taus, base, **{"lambda": 0.5}) - base
    torch.testing.assert_close(half, 0.5 * one, atol=1e-5, rtol=1e-5)
