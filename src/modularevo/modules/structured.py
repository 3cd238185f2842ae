"""Structured masks: whole FFN neurons and whole attention heads.

One score per FFN neuron and per attention head; the binary unit mask
``1[score > 0]`` (straight-through gradient) is expanded to weight masks:

- FFN neuron ``j``: row ``j`` of ``up`` (and of ``gate`` in a gated FFN), entry ``j``
  of their biases, and column ``j`` of ``down``;
- attention head ``h``: rows ``h·d:(h+1)·d`` of ``q``, ``k``, ``v`` (and their
  biases) and the same columns of ``o``. Under grouped-query attention (fewer
  key/value heads) only ``q`` and ``o`` are masked. A fused ``c_attn`` (GPT-2) is
  masked in its three slices.

GPT-2 ``Conv1D`` layers store ``(in, out)``: "rows" become columns there.
Output biases (``down.bias``, ``o.bias``) are not covered: they do not belong to
one neuron or head. Kept units are returned by :meth:`StructuredScores.unit_masks`
so a deployment step can physically remove the dropped ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from modularevo.modules.layers import binarize

__all__ = ["Segment", "StructuredScores", "structured_segments"]


@dataclass(frozen=True)
class Segment:
    """A slice of one parameter's dimension governed by one group of units.

    Attributes:
        unit: key of the unit group (``"ffn:<layer>"`` or ``"heads:<layer>"``).
        dim: the parameter dimension the units run along.
        offset: first index of the slice along ``dim``.
        unit_size: entries per unit along ``dim`` (1 for a neuron, head_dim for a head).
    """

    unit: str
    dim: int
    offset: int
    unit_size: int


def _row_dim(transposed: bool) -> int:
    return 1 if transposed else 0


def _add(
    plan: dict[str, list[Segment]], layer: str, seg: Segment, *, bias: bool, params: set[str]
) -> None:
    plan.setdefault(f"{layer}.weight", []).append(seg)
    if bias and f"{layer}.bias" in params:
        plan.setdefault(f"{layer}.bias", []).append(Segment(seg.unit, 0, seg.offset, seg.unit_size))


def _ffn_plan(arch: Any, params: set[str], plan: dict[str, list[Segment]]) -> dict[str, int]:
    units: dict[str, int] = {}
    for f in arch.ffn:
        key = f"ffn:{f.layer}"
        units[key] = int(f.act_dim)
        for lin in (f.up, f.gate):
            if lin:
                seg = Segment(key, _row_dim(arch.is_transposed(lin)), 0, 1)
                _add(plan, lin, seg, bias=True, params=params)
        col = 1 - _row_dim(arch.is_transposed(f.down))
        _add(plan, f.down, Segment(key, col, 0, 1), bias=False, params=params)
    return units


def _attn_plan(arch: Any, params: set[str], plan: dict[str, list[Segment]]) -> dict[str, int]:
    units: dict[str, int] = {}
    for a in arch.attention:
        key = f"heads:{a.layer}:{a.kind}" if a.kind != "self" else f"heads:{a.layer}"
        units[key] = int(a.num_heads)
        width = int(a.num_heads) * int(a.head_dim)
        gqa = bool(a.num_kv_heads) and int(a.num_kv_heads) != int(a.num_heads)
        if a.fused:
            row = _row_dim(arch.is_transposed(a.q))
            for i in range(3):
                _add(plan, a.q, Segment(key, row, i * width, a.head_dim), bias=True, params=params)
        else:
            for lin in (a.q,) if gqa else (a.q, a.k, a.v):
                seg = Segment(key, _row_dim(arch.is_transposed(lin)), 0, a.head_dim)
                _add(plan, lin, seg, bias=True, params=params)
        col = 1 - _row_dim(arch.is_transposed(a.o))
        _add(plan, a.o, Segment(key, col, 0, a.head_dim), bias=False, params=params)
    return units


def structured_segments(
    arch: Any, params: Mapping[str, Tensor], *, ffn: bool = True, heads: bool = True
) -> tuple[dict[str, int], dict[str, list[Segment]]]:
    """Plan which parameter slices each FFN neuron and attention head governs.

    Args:
        arch: an :class:`~modularevo.models.arch.ArchInfo` (``ffn``, ``attention``,
            ``is_transposed``).
        params: the model's named parameters (to see which biases exist).
        ffn: mask FFN neurons.
        heads: mask attention heads.

    Returns:
        ``(units, plan)``: unit group -> number of units, and parameter name -> segments.
    """
    names = set(params)
    plan: dict[str, list[Segment]] = {}
    units: dict[str, int] = {}
    if ffn:
        units.update(_ffn_plan(arch, names, plan))
    if heads:
        units.update(_attn_plan(arch, names, plan))
    return units, plan


def _key(name: str) -> str:
    return name.replace(".", "__").replace(":", "--")


class StructuredScores(nn.Module):
    """One score per FFN neuron and attention head, expanded to per-parameter masks.

    Implements :class:`~modularevo.modules.layers.MaskParametrization`.

    Args:
        arch: the model's ``ArchInfo``.
        params: the model's named parameters (shapes, existing biases).
        init_range: scores start uniform in ``[low, high)``.
        generator: randomness for the init.
        ffn / heads: which unit kinds to mask.
    """

    def __init__(
        self,
        arch: Any,
        params: Mapping[str, Tensor],
        *,
        init_range: tuple[float, float] = (0.0, 1.0),
        generator: torch.Generator | None = None,
        ffn: bool = True,
        heads: bool = True,
    ) -> None:
        super().__init__()
        units, self._plan = structured_segments(arch, params, ffn=ffn, heads=heads)
        self._shapes = {n: tuple(params[n].shape) for n in self._plan}
        self._units = list(units)
        low, high = init_range
        self.scores = nn.ParameterDict()
        for key, n in units.items():
            s = torch.rand(n, generator=generator) * (high - low) + low
            self.scores[_key(key)] = nn.Parameter(s)

    def names(self) -> list[str]:
        """Parameter names the structured mask covers."""
        return list(self._plan)

    def _unit_masks(self, hard: bool) -> dict[str, Tensor]:
        out = {}
        for u in self._units:
            s = self.scores[_key(u)]
            out[u] = (s.detach() > 0).float() if hard else binarize(s)
        return out

    def unit_masks(self) -> dict[str, Tensor]:
        """Unit group -> bool vector of kept neurons / heads."""
        return {u: m.bool() for u, m in self._unit_masks(hard=True).items()}

    def _vector(self, name: str, units: Mapping[str, Tensor]) -> tuple[int, Tensor]:
        """(dim, mask along dim) for parameter ``name``; ones outside its segments."""
        segs = self._plan[name]
        length = self._shapes[name][segs[0].dim]
        parts: list[Tensor] = []
        pos = 0
        for seg in sorted(segs, key=lambda s: s.offset):
            if seg.offset > pos:
                parts.append(units[seg.unit].new_ones(seg.offset - pos))
            vec = units[seg.unit].repeat_interleave(seg.unit_size)
            parts.append(vec)
            pos = seg.offset + vec.numel()
        if pos < length:
            parts.append(parts[0].new_ones(length - pos))
        return segs[0].dim, torch.cat(parts)

    def _expand(self, name: str, units: Mapping[str, Tensor]) -> Tensor:
        dim, vec = self._vector(name, units)
        if len(self._shapes[name]) == 1:
            return vec
        return vec[:, None] if dim == 0 else vec[None, :]

    def masked_params(self, params: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``{name: param ⊙ expanded unit mask}``; gradients reach the unit scores."""
        units = self._unit_masks(hard=False)
        return {n: params[n] * self._expand(n, units).to(params[n].dtype) for n in self._plan}

    def hard_masks(self) -> dict[str, Tensor]:
        """``{name: bool mask}`` of each covered parameter's full shape."""
        units = self._unit_masks(hard=True)
        return {
            n: self._expand(n, units).bool().expand(self._shapes[n]).clone() for n in self._plan
        }

    def kept_fraction(self) -> Tensor:
        """Kept fraction over all covered entries, differentiable by STE."""
        units = self._unit_masks(hard=False)
        kept = torch.zeros(())
        total = 0
        for n, shape in self._shapes.items():
            dim, vec = self._vector(n, units)
            other = 1
            for i, s in enumerate(shape):
                other *= s if i != dim else 1
            kept = kept + vec.sum() * other
            total += vec.numel() * other
        return kept / max(total, 1)
