"""``opcm``: orthogonal projection-based continual merging (models arrive one at a time).

Paper: Tang et al., "Merging Models on the Fly Without Retraining: A Sequential Approach
to Scalable Continual Model Merging", NeurIPS 2025, https://arxiv.org/abs/2501.09522
(FusionBench ``fusion_bench.method.opcm``).

The merge keeps one running task vector ``M`` and a running mean of the task-vector norms,
whatever the number of tasks seen (constant memory). For each new task vector ``τ``
(``τ_t = w_t (θ_t − θ_0)``, in the order given):

* a weight matrix is projected away from what ``M`` already holds: with the full SVD
  ``M = U Σ Vᵀ``, ``P = Uᵀ τ V`` loses its diagonal (the components along each of ``M``'s
  singular pairs) and its top-left ``s × s`` block, ``s`` the first index where the
  cumulative share of ``Σ`` exceeds ``alpha`` (cross terms among ``M``'s dominant
  directions); ``M ← M + U P Vᵀ``. A zero ``M`` protects nothing: ``M ← M + τ``.
* other tensors are summed: ``M ← M + τ``.

The merged model is ``θ_0 + λ M · n̄ / ‖M‖`` with ``n̄`` the mean of the task vectors' norms
(the paper's ``λ_t`` rescaling, so the merged task vector is as long as an average one).
Definitional difference: the paper and FusionBench take the norms over the whole model and
project only ``nn.Linear`` weights (embeddings are summed); the executor streams one
tensor at a time, so here the norms are per tensor and every 2-D tensor is projected. The
first task in the order is never projected: the result depends on the order
(FusionBench shuffles it by default; here it is the order of the models).

:class:`OpcmState` is the one-model-at-a-time form evolution can keep between rounds;
folding the models through it gives the registered method's result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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


def split_rank(s: Tensor, alpha: float) -> int:
    """First index where the cumulative share of the singular values ``s`` exceeds ``alpha``
    (0 when none does, as ``argmax`` of an all-false mask)."""
    share = s.cumsum(dim=0) / s.sum()
    return int((share > alpha).float().argmax())


def project_away(merged: Tensor, tau: Tensor, alpha: float) -> Tensor:
    """The part of the matrix ``tau`` that OPCM adds to the running matrix ``merged``."""
    if not bool(merged.any()):
        return tau
    u, s, vh = robust_svd(merged, full_matrices=True)
    p = u.T @ tau @ vh.T  # (rows, cols) in merged's singular bases
    p.diagonal().zero_()
    k = split_rank(s, alpha)
    p[:k, :k] = 0
    return u @ p @ vh


@dataclass(frozen=True)
class OpcmState:
    """OPCM's running state for one tensor: the unscaled merged task vector, the number
    of tasks and the sum of their norms (constant memory in the number of tasks)."""

    merged: Tensor
    tasks: int = 1
    norm_sum: float = 0.0

    @classmethod
    def start(cls, tau: Tensor) -> OpcmState:
        """The state after the first task vector."""
        return cls(tau.float().clone(), 1, float(tau.float().norm()))

    def add(self, tau: Tensor, alpha: float) -> OpcmState:
        """The state after one more task vector ``tau``."""
        t = tau.float()
        part = project_away(self.merged, t, alpha) if is_matrix(t) else t
        return OpcmState(self.merged + part, self.tasks + 1, self.norm_sum + float(t.norm()))

    def delta(self) -> Tensor:
        """The merged task vector rescaled to the mean task-vector norm."""
        norm = float(self.merged.norm())
        if norm == 0.0:
            return self.merged.clone()
        return self.merged * (self.norm_sum / self.tasks / norm)


@register_method(
    "opcm",
    paper="https://arxiv.org/abs/2501.09522",
    summary="continual: each task projected off the running merge's SVD, mean norm (OPCM)",
    params=(
        weight_param(),
        OpenParam("lambda", "global", default=1.0, doc="scale of the merged task vector"),
        OpenParam(
            "alpha", "global", default=0.5, ge=0.0, le=1.0,
            doc="share of the running spectrum whose cross terms are protected",
        ),
    ),
)  # fmt: skip
def opcm(
    tensors: Sequence[Tensor],
    base: Tensor,
    *,
    generators: Any = None,
    masks: Any = None,
    thresholds: Any = None,
    **params: Any,
) -> Tensor:
    """``θ_0 + λ M n̄/‖M‖``, the models folded in order (see the module doc)."""
    p = resolve_params("opcm", params, len(tensors))
    taus = task_vectors(tensors, base, p["weight"])
    state = OpcmState.start(taus[0])
    for tau in taus[1:]:
        state = state.add(tau, float(p["alpha"]))
    return base.float() + float(p["lambda"]) * state.delta()
