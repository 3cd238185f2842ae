"""In-memory merge of state dicts with the registered per-tensor merge methods.

The streaming executor (:func:`modularevo.merge`) reads and writes HF folders; the
λ search of an evolution round merges the same small models dozens of times, so it
calls the registered pure functions directly on tensors held in memory, through the
same :func:`~modularevo.merging.spec.call_method` as the streaming executor:
generators seeded per (seed, tensor name, model index), module masks for methods
with ``uses_masks``, no global thresholds (methods run with their per-tensor scope).

Example:
    >>> merged = merge_state_dicts(base, [sd1, sd2], "task_arithmetic",
    ...                            {"weight": [0.5, 0.7]})  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from modularevo.merging.spec import MERGE_METHODS, call_method, method_generators

StateDict = dict[str, Tensor]


def merge_state_dicts(
    base: Mapping[str, Tensor],
    models: Sequence[Mapping[str, Tensor]],
    method: str,
    params: Mapping[str, Any],
    *,
    masks: Sequence[Mapping[str, Tensor] | None] | None = None,
    exclude: Callable[[str], bool] | None = None,
    seed: int = 0,
) -> StateDict:
    """Merge ``models`` into ``base`` tensor by tensor with the registered ``method``.

    Args:
        base: the current model's tensors (the task vectors are ``model - base``).
        models: K fine-tuned state dicts holding at least the keys of ``base``.
        method: a name in ``MERGE_METHODS``.
        params: the method's parameters (per-model ones as K-lists or scalars).
        masks: K mappings name -> bool mask (or ``None``) for mask-aware methods.
        exclude: names kept at ``base`` (e.g. task heads), besides non-float tensors.
        seed: seed of the per-tensor generators of randomized methods.

    Returns:
        A new state dict with the keys of ``base`` (excluded tensors are shared, not copied).

    Raises:
        KeyError: a model lacks a tensor of ``base``.
    """
    spec = MERGE_METHODS.get(method)
    out: StateDict = {}
    for name, b in base.items():
        if (exclude is not None and exclude(name)) or not torch.is_floating_point(b):
            out[name] = b
            continue
        tensors = [m[name] for m in models]
        mask_list = None
        if spec.uses_masks:
            mask_list = [
                None if m is None else m.get(name) for m in (masks or [None] * len(models))
            ]
        gens = method_generators(spec, seed, name, range(len(models)))
        merged = call_method(spec, tensors, b, params, generators=gens, masks=mask_list)
        out[name] = merged.to(b.dtype)
    return out


def task_vector_norms(base: Mapping[str, Tensor], model: Mapping[str, Tensor]) -> float:
    """L2 norm of ``model - base`` over the float tensors of ``base`` (a diagnostic)."""
    total = 0.0
    for name, b in base.items():
        if torch.is_floating_point(b):
            total += float((model[name].float() - b.float()).pow(2).sum())
    return total**0.5
