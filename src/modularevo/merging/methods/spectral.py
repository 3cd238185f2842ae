"""Spectral merges of task matrices: TSV-M, Iso-C and Iso-CTS.

Each works on one weight matrix at a time, on the task vectors ``τ_t = w_t (θ_t − θ_0)``
(``w_t`` the per-model ``weight``, default 1), and returns ``θ_0 + λ Δ``:

* ``tsv_m`` (Gargiulo et al., "Task Singular Vectors: Reducing Task Interference in Model
  Merging", CVPR 2025, https://arxiv.org/abs/2412.00081): each task keeps its top
  ``⌊r/T⌋`` singular triplets (``r = min(rows, cols)``, ``T`` tasks); the kept left and
  right singular vectors of all tasks are stacked side by side and each stack is replaced
  by its nearest orthogonal matrix (``U = P Qᵀ`` for ``U = P S Qᵀ``), which removes the
  interference between tasks; ``Δ = U_⊥ diag(σ) V_⊥ᵀ``.
* ``iso_c`` (Marczak et al., "No Task Left Behind: Isotropic Model Merging with Common and
  Task-Specific Subspaces", ICML 2025, https://arxiv.org/abs/2502.04959): the task
  arithmetic sum ``Σ_t τ_t = U diag(σ) Vᵀ`` with its spectrum made flat,
  ``Δ = mean(σ) U Vᵀ``, so no direction of the common subspace dominates.
* ``iso_cts`` (same paper): the top ``k`` directions of the sum (the common subspace,
  ``k ≈ common_fraction · r``) plus, for each task, the top ``(r − k)/T`` directions of its
  task vector with the common subspace projected out; the stacked directions are
  orthogonalised as in TSV-M and the spectrum made flat (the mean of the kept singular
  values).

Tensors that are not matrices (biases, LayerNorm weights) take the mean of the task
vectors, as the papers and FusionBench do. The definitions (block sizes, the
orthogonalisation, the flat spectrum) follow FusionBench 0.2's implementations of the
three methods; each result is computed here in float32 with ``torch.linalg.svd`` (with a
fallback when it does not converge: merging/_linalg.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from modularevo.merging._linalg import robust_svd
from modularevo.merging.methods._params import OpenParam, resolve_params, weight_param
from modularevo.merging.spec import register_method
from modularevo.utils.lazy import LazyModule

if TYPE_CHECKING:
    import torch
    from torch import Tensor
else:
    torch = LazyModule("torch")

LAMBDA = OpenParam("lambda", "global", default=1.0, doc="scale of the merged task matrix")
COMMON = OpenParam(
    "common_fraction", "global", default=0.8, gt=0.0, lt=1.0,
    doc="share of the rank given to the common subspace (Iso-CTS)",
)  # fmt: skip


def task_vectors(tensors: Sequence[Tensor], base: Tensor, weights: Sequence[float]) -> list[Tensor]:
    """``w_t (θ_t − θ_0)`` in float32 for each input."""
    b = base.float()
    return [(t.float() - b) * float(w) for t, w in zip(tensors, weights, strict=True)]


def is_matrix(t: Tensor) -> bool:
    """Whether ``t`` is a weight matrix the spectral methods decompose (2-D, both sides > 1)."""
    return t.dim() == 2 and min(t.shape) > 1


def nearest_orthogonal(m: Tensor) -> Tensor:
    """The matrix with orthonormal columns closest to ``m`` (``P Qᵀ`` for ``m = P S Qᵀ``)."""
    p, _, qh = robust_svd(m, full_matrices=False)
    return p @ qh


def tsv_merge(taus: Sequence[Tensor]) -> Tensor:
    """TSV-M's merged task matrix of the task matrices ``taus`` (see the module doc)."""
    r = min(taus[0].shape)
    keep = max(1, r // len(taus))
    us, ss, vhs = [], [], []
    for tau in taus:
        u, s, vh = robust_svd(tau, full_matrices=False)
        us.append(u[:, :keep])
        ss.append(s[:keep])
        vhs.append(vh[:keep])
    u_all = nearest_orthogonal(torch.cat(us, dim=1))  # (rows, T·keep)
    vh_all = nearest_orthogonal(torch.cat(vhs, dim=0).T).T  # (T·keep, cols)
    return (u_all * torch.cat(ss)) @ vh_all


def iso_c_merge(taus: Sequence[Tensor]) -> Tensor:
    """Iso-C's merged task matrix: the sum with its singular values replaced by their mean."""
    u, s, vh = robust_svd(torch.stack(list(taus)).sum(dim=0), full_matrices=False)
    return s.mean() * (u @ vh)


def common_size(r: int, tasks: int, fraction: float) -> tuple[int, int]:
    """(common directions, directions per task) for rank ``r``: the task-specific share is
    a multiple of ``tasks`` (FusionBench's rounding); at least one of each when ``r`` allows."""
    common = int(r * fraction)
    per_task = round((r - common) / tasks)
    per_task = max(0, min(per_task, (r - 1) // tasks)) if r > tasks else 0
    return r - per_task * tasks, per_task


def iso_cts_merge(taus: Sequence[Tensor], fraction: float) -> Tensor:
    """Iso-CTS's merged task matrix (see the module doc)."""
    r = min(taus[0].shape)
    k, per_task = common_size(r, len(taus), fraction)
    u, s, vh = robust_svd(torch.stack(list(taus)).sum(dim=0), full_matrices=False)
    us, ss, vhs = [u[:, :k]], [s[:k]], [vh[:k]]
    if per_task:
        common = us[0]
        for tau in taus:
            rest = tau - common @ (common.T @ tau)  # the task outside the common subspace
            ut, st, vht = robust_svd(rest, full_matrices=False)
            us.append(ut[:, :per_task])
            ss.append(st[:per_task])
            vhs.append(vht[:per_task])
    u_all = nearest_orthogonal(torch.cat(us, dim=1))
    vh_all = nearest_orthogonal(torch.cat(vhs, dim=0).T).T
    return torch.cat(ss).mean() * (u_all @ vh_all)


def _merge(name: str, tensors: Sequence[Tensor], base: Tensor, params: dict[str, Any]) -> Tensor:
    p = resolve_params(name, params, len(tensors))
    taus = task_vectors(tensors, base, p["weight"])
    if not is_matrix(taus[0]):
        delta = torch.stack(taus).mean(dim=0)
    elif name == "tsv_m":
        delta = tsv_merge(taus)
    elif name == "iso_c":
        delta = iso_c_merge(taus)
    else:
        delta = iso_cts_merge(taus, float(p["common_fraction"]))
    return base.float() + float(p["lambda"]) * delta


def _register(name: str, paper: str, summary: str, params: tuple[Any, ...], doc: str) -> None:
    """Register the spectral method ``name`` (one tensor function per method name)."""

    def fn(
        tensors: Sequence[Tensor],
        base: Tensor,
        *,
        generators: Any = None,
        masks: Any = None,
        thresholds: Any = None,
        **params: Any,
    ) -> Tensor:
        return _merge(name, tensors, base, params)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"{doc}\n\nPaper: {paper}\n\nSee :mod:`{__name__}`."
    register_method(name, paper=paper, summary=summary, params=params)(fn)


_TSV = "https://arxiv.org/abs/2412.00081"
_ISO = "https://arxiv.org/abs/2502.04959"
_register(
    "tsv_m",
    _TSV,
    "per task the top r/T singular vectors, stacked and orthogonalised (TSV-M)",
    (weight_param(), LAMBDA),
    "``θ_0 + λ U_⊥ diag(σ) V_⊥ᵀ`` per matrix; the mean elsewhere.",
)
_register(
    "iso_c",
    _ISO,
    "task arithmetic sum with a flat spectrum: mean(σ) U Vᵀ (Iso-C)",
    (weight_param(), LAMBDA),
    "``θ_0 + λ mean(σ) U Vᵀ`` for the sum ``U diag(σ) Vᵀ``.",
)
_register("iso_cts", _ISO,
          "common subspace of the sum + task-specific directions, flat spectrum (Iso-CTS)",
          (weight_param(), LAMBDA, COMMON),
          "``θ_0 + λ mean(σ) U_⊥ V_⊥ᵀ`` over common and task-specific directions.")  # fmt: skip
