"""``cart``: centred task vectors, each cut to low rank, added to the average.

Paper: Choi, Kim, Lee and Hong, "Revisiting Weight Averaging for Model Merging" (CART,
arXiv 2024), https://arxiv.org/abs/2412.12153. Reported on the 8-task CLIP ViT-B/32
benchmark: 84.7 (task arithmetic 69.1, TIES 72.4, Consensus TA 75.2).

Weight averaging is task arithmetic around the mean: ``θ_avg = θ_0 + mean_t τ_t``. CART
centres each task vector on that mean, ``c_t = τ_t − mean_s τ_s``, keeps the top ``k``
singular triplets of each centred matrix (``k = max(1, round(rank_fraction · r))``,
``r = min(rows, cols)``) and adds them back::

    θ = θ_0 + mean_t τ_t + λ Σ_t SVD_k(c_t)

with ``τ_t = w_t (θ_t − θ_0)``. The centred vectors sum to zero, so at full rank and
``λ = 1`` the sum vanishes: the interference CART removes lives in the small singular
directions of the centred vectors. Tensors that are not matrices (biases, LayerNorm
weights) have no low-rank form and take the average, as the paper does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from modularevo.merging._linalg import robust_svd
from modularevo.merging.methods._params import OpenParam, resolve_params, weight_param
from modularevo.merging.methods.spectral import is_matrix, task_vectors
from modularevo.merging.spec import register_method
from modularevo.utils.lazy import LazyModule

if TYPE_CHECKING:
    import torch
    from torch import Tensor
else:
    torch = LazyModule("torch")


def low_rank(m: Tensor, k: int) -> Tensor:
    """The best rank-``k`` approximation of the matrix ``m`` (truncated SVD)."""
    u, s, vh = robust_svd(m, full_matrices=False)
    return (u[:, :k] * s[:k]) @ vh[:k]


def cart_rank(shape: Sequence[int], fraction: float) -> int:
    """Singular triplets kept per centred task matrix: ``max(1, round(fraction · r))``."""
    return max(1, round(fraction * min(shape)))


@register_method(
    "cart",
    paper="https://arxiv.org/abs/2412.12153",
    summary="average + λ · Σ_t low-rank(τ_t − mean τ) per matrix (CART)",
    params=(
        weight_param(),
        OpenParam("lambda", "global", default=1.0, doc="scale of the low-rank centred sum"),
        OpenParam(
            "rank_fraction", "global", default=0.1, gt=0.0, le=1.0,
            doc="share of each matrix's rank kept per centred task vector",
        ),
    ),
)  # fmt: skip
def cart(
    tensors: Sequence[Tensor],
    base: Tensor,
    *,
    generators: Any = None,
    masks: Any = None,
    thresholds: Any = None,
    **params: Any,
) -> Tensor:
    """``θ_0 + mean_t τ_t + λ Σ_t SVD_k(τ_t − mean τ)`` (see the module doc)."""
    p = resolve_params("cart", params, len(tensors))
    taus = task_vectors(tensors, base, p["weight"])
    mean = torch.stack(taus).mean(dim=0)
    out = base.float() + mean
    if not is_matrix(mean) or len(taus) < 2:
        return out  # one task: the centred vector is zero
    k = cart_rank(mean.shape, float(p["rank_fraction"]))
    low = torch.stack([low_rank(tau - mean, k) for tau in taus]).sum(dim=0)
    return out + float(p["lambda"]) * low
