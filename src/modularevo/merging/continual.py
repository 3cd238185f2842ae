"""Continual merging of state dicts that arrive one at a time, in constant memory.

:class:`ContinualOpcm` keeps, whatever the number of models seen, one running task
vector per tensor (:class:`~modularevo.merging.methods.opcm.OpcmState`) and the sum of the
models' whole-model task-vector norms. Its :meth:`ContinualOpcm.merged` rescales with the
whole-model norms, as the OPCM paper and FusionBench do (Tang et al., NeurIPS 2025,
https://arxiv.org/abs/2501.09522); the registered per-tensor method ``opcm`` rescales each
tensor by its own norms instead (the streaming executor sees one tensor at a time).
MagMax needs no such class: ``magmax`` of the running result and the next model equals
``magmax`` of all of them.

Example:
    >>> merger = ContinualOpcm(base_state, alpha=0.5)  # doctest: +SKIP
    >>> for sd in finetunes_arriving_one_by_one:  # doctest: +SKIP
    ...     merger.add(sd)
    >>> merged = merger.merged()  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from modularevo.merging.methods.opcm import OpcmState


class ContinualOpcm:
    """OPCM over whole state dicts, one model at a time (see the module doc).

    Args:
        base: the pretrained state dict (task vectors are ``model − base``).
        alpha: share of the running spectrum whose cross terms are protected.
        exclude: names kept at the base (task heads), besides non-float tensors.
    """

    def __init__(
        self,
        base: Mapping[str, Tensor],
        *,
        alpha: float = 0.5,
        exclude: Callable[[str], bool] | None = None,
    ) -> None:
        self.base = dict(base)
        self.alpha = alpha
        self.names = [
            n for n, t in base.items()
            if torch.is_floating_point(t) and not (exclude is not None and exclude(n))
        ]  # fmt: skip
        self.states: dict[str, OpcmState] = {}
        self.norm_sum = 0.0
        self.models = 0

    def add(self, model: Mapping[str, Tensor], weight: float = 1.0) -> None:
        """Fold in one more model (its task vector scaled by ``weight``)."""
        taus = {n: (model[n].float() - self.base[n].float()) * weight for n in self.names}
        self.norm_sum += math.sqrt(sum(float(t.pow(2).sum()) for t in taus.values()))
        for n, tau in taus.items():
            st = self.states.get(n)
            self.states[n] = OpcmState.start(tau) if st is None else st.add(tau, self.alpha)
        self.models += 1

    def merged(self, lam: float = 1.0) -> dict[str, Tensor]:
        """``θ_0 + λ M · n̄ / ‖M‖`` with whole-model norms, in the base's dtypes.

        Raises:
            ValueError: no model was added.
        """
        if not self.models:
            raise ValueError("ContinualOpcm.merged() needs at least one added model")
        norm = math.sqrt(sum(float(s.merged.pow(2).sum()) for s in self.states.values()))
        scale = lam * (self.norm_sum / self.models / norm) if norm > 0 else 0.0
        out = dict(self.base)
        for n, st in self.states.items():
            out[n] = (self.base[n].float() + scale * st.merged).to(self.base[n].dtype)
        return out
