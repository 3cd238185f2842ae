"""``pcb``: parameter competition balancing (PCB-Merging).

Paper: Du et al., "Parameter Competition Balancing for Model Merging", NeurIPS 2024,
https://arxiv.org/abs/2410.02396 (reference code: github.com/duguodong7/pcb-merging).
Reported on the 8-task CLIP ViT-B/32 benchmark: 76.3 (task arithmetic 69.1, TIES 72.4).

For K task vectors ``τ_t = w_t (θ_t − θ_0)`` of one tensor (flattened to ``d`` entries):

1. outliers are clamped: ``|τ_t|`` to its quantiles ``[q(10⁻⁴), q(1 − 10⁻⁴)]`` (the
   reference code's sorted positions ``int(d·10⁻⁴)`` and ``int(d(1 − 10⁻⁴)) − 1``);
2. intra-balancing, how much an entry matters within its task:
   ``exp(K · minmax(|τ_t|)²)``;
3. inter-balancing, how much it agrees with the other tasks:
   ``tanh(τ_t ⊙ Σ_s τ_s)``;
4. the score ``β_t`` (product of the two) is raised to its ``1 − density`` quantile
   ``q`` (sorted position ``int(d(1 − density))``) and min-max normalised, so the entries
   at or below ``q`` get weight 0 (the drop) and the rest a weight in (0, 1];
5. ``θ = θ_0 + λ Σ_t β_t τ_t / Σ_t β_t`` (0 where every task dropped the entry).

Where the reference code divides by zero (all of a task's kept scores tie, e.g. a
one-entry tensor, or all its ``|τ|`` tie), the tied top entries get weight 1 and the
others 0 (``|τ|``: 1 everywhere); a tensor that ties everywhere therefore takes the mean
of the task vectors. Definitional difference: the
reference code flattens the whole model into one vector per task; here the quantiles and
the min-max are per tensor (the executor streams one tensor at a time), and every tensor,
1-D ones included, goes through the same steps, as in the paper.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from modularevo.merging.methods._params import OpenParam, resolve_params, weight_param
from modularevo.merging.methods.spectral import task_vectors
from modularevo.merging.spec import register_method
from modularevo.utils.lazy import LazyModule

if TYPE_CHECKING:
    import torch
    from torch import Tensor
else:
    torch = LazyModule("torch")

OUTLIER = 1e-4  # the reference code's clamp ratio for |τ|


def minmax(x: Tensor) -> Tensor:
    """Each row of ``x`` (K, d) mapped to [0, 1]; a row whose entries all tie gives ones."""
    lo = x.min(dim=1, keepdim=True).values
    span = x.max(dim=1, keepdim=True).values - lo
    return torch.where(span > 0, (x - lo) / torch.where(span > 0, span, 1.0), 1.0)


def clamp_quantiles(x: Tensor, low: float, high: float) -> Tensor:
    """Each row of ``x`` (K, d) clamped to its sorted positions ``int(d·low)`` and
    ``int(d(1 − high)) − 1`` (the reference code's quantiles, kept within ``[0, d)``)."""
    d = x.shape[1]
    srt = x.sort(dim=1).values
    i_lo = min(int(d * low), d - 1)
    i_hi = max(0, int(d * (1 - high) - 1))
    return torch.maximum(torch.minimum(x, srt[:, i_hi : i_hi + 1]), srt[:, i_lo : i_lo + 1])


def pcb_weights(taus: Tensor, density: float) -> tuple[Tensor, Tensor]:
    """(clamped task vectors, balanced weights β) for ``taus`` (K, d), see the module doc."""
    k = taus.shape[0]
    mag = clamp_quantiles(taus.abs(), OUTLIER, OUTLIER)
    clamped = torch.sign(taus) * mag
    intra = torch.exp(k * minmax(mag) ** 2)
    inter = torch.tanh(taus * taus.sum(dim=0, keepdim=True))
    score = intra * inter
    return clamped, drop_weights(score, density)


def drop_weights(score: Tensor, density: float) -> Tensor:
    """Each row of ``score`` (K, d) raised to its ``1 − density`` quantile and min-max
    normalised: ``(max(β, q) − q) / (max β − q)``; where the kept entries all tie
    (``max β = q``) they get 1 and the others 0; ``density`` 0 drops everything."""
    d = score.shape[1]
    i = int(d * (1 - density))
    if i >= d:
        return torch.zeros_like(score)
    q = score.sort(dim=1).values[:, i : i + 1]
    span = score.max(dim=1, keepdim=True).values - q
    scaled = (torch.maximum(score, q) - q) / torch.where(span > 0, span, 1.0)
    return torch.where(span > 0, scaled, (score >= q).float())


@register_method(
    "pcb",
    paper="https://arxiv.org/abs/2410.02396",
    summary="θ0 + λ Σ β_t τ_t / Σ β_t, β = intra × inter balance, low β dropped (PCB)",
    params=(
        weight_param(),
        OpenParam("lambda", "global", default=1.0, doc="scale of the merged task vector"),
        OpenParam(
            "density", "global", default=0.1, ge=0.0, le=1.0,
            doc="fraction of each task's entries kept (the paper's ratio r)",
        ),
    ),
)  # fmt: skip
def pcb(
    tensors: Sequence[Tensor],
    base: Tensor,
    *,
    generators: Any = None,
    masks: Any = None,
    thresholds: Any = None,
    **params: Any,
) -> Tensor:
    """``θ_0 + λ Σ_t β_t τ_t / Σ_t β_t`` (see the module doc)."""
    p = resolve_params("pcb", params, len(tensors))
    taus = torch.stack([t.reshape(-1) for t in task_vectors(tensors, base, p["weight"])])
    clamped, beta = pcb_weights(taus, float(p["density"]))
    total = beta.sum(dim=0)
    merged = (clamped * beta).sum(dim=0) / total.clamp_min(1e-12)
    return base.float() + float(p["lambda"]) * merged.reshape(base.shape)
