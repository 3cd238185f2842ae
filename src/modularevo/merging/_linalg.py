"""A singular value decomposition that does not give up on ill-conditioned matrices.

``torch.linalg.svd`` (LAPACK's divide-and-conquer ``gesdd`` on CPU) can fail to converge
on the task matrices merges meet in practice: embedding deltas whose rows are mostly zero
have many repeated singular values. A merge must not stop there, so :func:`robust_svd`
retries in float64 and then with LAPACK's slower, more robust ``gesvd`` (through SciPy),
and returns the factors in the input's dtype. Matrices ``gesdd`` handles get its result
unchanged, bit for bit.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from modularevo.utils.lazy import LazyModule

if TYPE_CHECKING:
    import torch
    from torch import Tensor
else:
    torch = LazyModule("torch")

log = logging.getLogger(__name__)

__all__ = ["robust_svd"]


def robust_svd(m: Tensor, *, full_matrices: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """``(U, S, Vh)`` of ``m`` like ``torch.linalg.svd``, falling back when it fails.

    Args:
        m: a 2-D tensor.
        full_matrices: as in ``torch.linalg.svd``.

    Returns:
        The factors, in ``m``'s dtype.
    """
    try:
        return torch.linalg.svd(m, full_matrices=full_matrices)
    except torch.linalg.LinAlgError:
        log.info("SVD of a %s matrix did not converge in %s; retrying", tuple(m.shape), m.dtype)
    try:
        u, s, vh = torch.linalg.svd(m.double(), full_matrices=full_matrices)
    except torch.linalg.LinAlgError:
        # deferred: SciPy is needed only for the rare matrices gesdd cannot decompose
        import scipy.linalg

        a, b, c = scipy.linalg.svd(
            m.double().numpy(), full_matrices=full_matrices, lapack_driver="gesvd"
        )
        u, s, vh = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(c)
    return u.to(m.dtype), s.to(m.dtype), vh.to(m.dtype)
