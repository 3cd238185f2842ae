"""robust_svd: gesdd's result when it converges, a correct fallback when it does not."""

from __future__ import annotations

import pytest
import torch

from modularevo.merging import _linalg
from modularevo.merging._linalg import robust_svd


def test_equals_torch_when_torch_converges() -> None:
    m = torch.randn(12, 7, generator=torch.Generator().manual_seed(0))
    for got, want in zip(robust_svd(m), torch.linalg.svd(m, full_matrices=False), strict=True):
        assert torch.equal(got, want)


@pytest.mark.parametrize("fail_float64", [False, True])
def test_a_failed_decomposition_falls_back(
    monkeypatch: pytest.MonkeyPatch, fail_float64: bool
) -> None:
    # an embedding-like delta: most rows zero, so many repeated (zero) singular values
    m = torch.zeros(40, 6)
    m[:3] = torch.randn(3, 6, generator=torch.Generator().manual_seed(1))
    real = torch.linalg.svd

    def flaky(x: torch.Tensor, full_matrices: bool = True) -> tuple[torch.Tensor, ...]:
        if x.dtype == torch.float32 or fail_float64:
            raise torch.linalg.LinAlgError("linalg.svd: The algorithm failed to converge")
        return real(x, full_matrices=full_matrices)

    monkeypatch.setattr(_linalg.torch.linalg, "svd", flaky)
    u, s, vh = robust_svd(m)
    assert u.dtype == s.dtype == vh.dtype == torch.float32
    assert (u.shape, s.shape, vh.shape) == ((40, 6), (6,), (6, 6))
    torch.testing.assert_close((u * s) @ vh, m, atol=1e-5, rtol=0)
    assert bool((s[:-1] >= s[1:]).all())
