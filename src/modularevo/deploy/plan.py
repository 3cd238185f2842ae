"""Planning a structured extraction: which FFN neurons and heads a module keeps.

See :mod:`modularevo.deploy.extract` for the definition of a structured module;
this file classifies every unit of every layer as kept or dropped, and finds what
is left unstructured.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from modularevo.deploy import hf_pruned
from modularevo.deploy.hf_pruned import FAMILY_SPECS, LayerSpec
from modularevo.errors import InputError
from modularevo.modules.mask import ModuleMask


@dataclass
class LayerPlan:
    """Which units of one transformer block survive."""

    ffn_keep: list[int]
    ffn_total: int
    head_keep: list[int]
    head_total: int
    group: int = 1  # query heads per key/value head (grouped-query attention)
    head_zero: list[int] = field(default_factory=list)  # dropped query heads of kept groups

    @property
    def kv_keep(self) -> list[int]:
        """Kept key/value heads (whole groups: one per ``group`` kept query heads)."""
        return [h // self.group for h in self.head_keep[:: self.group]]


@dataclass
class ExtractPlan:
    """Per-layer survivors plus masked tensors whose zeros are not structured."""

    family: str
    blocks: str
    layers: list[LayerPlan]
    residue: dict[str, int] = field(default_factory=dict)  # name -> masked-out entries

    @property
    def ffn_sizes(self) -> list[int]:
        """Kept FFN width per layer."""
        return [len(lp.ffn_keep) for lp in self.layers]

    @property
    def head_counts(self) -> list[int]:
        """Kept heads per layer."""
        return [len(lp.head_keep) for lp in self.layers]


def family_of(model: nn.Module) -> str:
    """The extraction family of ``model`` (``bert``, ``gpt_neo``, ``llama``).

    Raises:
        InputError: for a model family extraction does not support.
    """
    mt = getattr(getattr(model, "config", None), "model_type", None)
    mt = str(mt or "").removeprefix("modularevo_pruned_")
    if mt not in hf_pruned.MODEL_TYPE_FAMILY:
        raise InputError(
            f"structured extraction supports model types {sorted(hf_pruned.MODEL_TYPE_FAMILY)}, "
            f"got {mt!r} ({type(model).__name__}); use the sparse path "
            "(modularevo.deploy.sparse) for this model"
        )
    return hf_pruned.MODEL_TYPE_FAMILY[mt]


_ABSENT = object()


def _unit_slices(m: object, dim: int, n: int) -> tuple[Tensor, Tensor]:
    """(all-masked, all-kept) per unit along ``dim`` (units already a dimension).

    ``m`` is a bool mask, ``None`` (parameter without mask: all kept) or
    ``_ABSENT`` (no such parameter, e.g. a bias-free Linear: neutral).
    """
    if m is _ABSENT:
        return torch.ones(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool)
    if not isinstance(m, Tensor):
        return torch.zeros(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool)
    u = m.movedim(dim, 0).reshape(n, -1)
    return ~u.any(dim=1), u.all(dim=1)


def _classify(
    upstream: list[tuple[Tensor, Tensor]],
    downstream: tuple[Tensor, Tensor],
    any_up: bool,
) -> tuple[Tensor, Tensor]:
    """(dropped, kept) per unit from the (all-masked, all-kept) slices of its tensors.

    ``any_up``: one all-masked upstream tensor suffices (gated FFN: gate * up);
    otherwise every upstream tensor must be all-masked (v weight + v bias).
    """
    down_off, down_on = downstream
    ups_off = torch.stack([o for o, _ in upstream])
    up_off = ups_off.any(0) if any_up else ups_off.all(0)
    kept = down_on & torch.stack([k for _, k in upstream]).all(0)
    return down_off | up_off, kept


def _mask(masks: Mapping[str, object], name: str) -> object:
    return masks.get(name)


def _ffn_plan(masks: Mapping[str, object], pre: str, spec: LayerSpec, n: int) -> Tensor:
    """Bool per neuron: kept. Raises for a partly kept neuron."""
    ups = []
    for path in spec.up:
        w = _unit_slices(_mask(masks, f"{pre}.{path}.weight"), 0, n)
        b = _unit_slices(_mask(masks, f"{pre}.{path}.bias"), 0, n)
        ups.append((w[0] & b[0], w[1] & b[1]))
    down = _unit_slices(_mask(masks, f"{pre}.{spec.down}.weight"), 1, n)
    dropped, kept = _classify(ups, down, any_up=True)
    _raise_partial(dropped, kept, f"{pre}.{spec.down}.weight", "FFN neuron (column)")
    return ~dropped


def _head_plan(masks: Mapping[str, object], pre: str, spec: LayerSpec, n: int) -> Tensor:
    """Bool per head: kept. Raises for a partly kept head."""

    def sl(name: str, dim: int) -> tuple[Tensor, Tensor]:
        return _unit_slices(_mask(masks, name), dim, n)

    v = [sl(f"{pre}.{spec.v}.weight", 0), sl(f"{pre}.{spec.v}.bias", 0)]
    qk = [sl(f"{pre}.{p}.{s}", 0) for p in (spec.q, spec.k) for s in ("weight", "bias")]
    down = sl(f"{pre}.{spec.o}.weight", 1)
    dropped, kept = _classify(v, down, any_up=False)
    kept = kept & torch.stack([k for _, k in qk]).all(0)
    _raise_partial(dropped, kept, f"{pre}.{spec.o}.weight", "attention head")
    return ~dropped


def _gqa_plan(
    masks: Mapping[str, object], pre: str, spec: LayerSpec, n_q: int, group: int
) -> tuple[Tensor, Tensor]:
    """Under GQA: (kept key/value groups, dropped query heads inside kept groups).

    ``masks`` is viewed per query head (q rows, o columns) and per key/value head (k, v
    rows). A query head is dropped when its o columns are all masked, kept when its q
    rows and o columns are all kept. A group is dropped when its v rows (with bias) are
    all masked or all its query heads are dropped; otherwise it is kept whole, needs all
    its k and v rows, and its dropped query heads stay in the smaller model with zero
    output columns (the structured learner masks query heads one by one). Raises for a
    partly kept query head or key/value head.
    """
    n_kv = n_q // group

    def sl(name: str, dim: int, n: int) -> tuple[Tensor, Tensor]:
        return _unit_slices(_mask(masks, name), dim, n)

    o_off, o_on = sl(f"{pre}.{spec.o}.weight", 1, n_q)
    q_on = torch.stack([sl(f"{pre}.{spec.q}.{s}", 0, n_q)[1] for s in ("weight", "bias")]).all(0)
    head_on = o_on & q_on
    _raise_partial(o_off, head_on, f"{pre}.{spec.o}.weight", "attention head")
    v = [sl(f"{pre}.{spec.v}.{s}", 0, n_kv) for s in ("weight", "bias")]
    v_off = v[0][0] & v[1][0]
    kv_on = torch.stack(
        [sl(f"{pre}.{p}.{s}", 0, n_kv)[1] for p in (spec.k, spec.v) for s in ("weight", "bias")]
    ).all(0)
    dropped = v_off | o_off.view(n_kv, group).all(1)
    _raise_partial(dropped, kv_on, f"{pre}.{spec.v}.weight", "key/value head")
    zero = o_off & (~dropped).repeat_interleave(group)
    return ~dropped, zero


def _raise_partial(dropped: Tensor, kept: Tensor, name: str, unit: str) -> None:
    bad = (~dropped & ~kept).nonzero().flatten()
    if bad.numel():
        raise _PartialUnit(name, unit, bad.tolist())


class _PartialUnit(Exception):
    def __init__(self, name: str, unit: str, idx: list[int]) -> None:
        super().__init__(name)
        self.name, self.unit, self.idx = name, unit, idx


def _layer_names(pre: str, spec: LayerSpec) -> list[str]:
    paths = [spec.q, spec.k, spec.v, spec.o, *spec.up, spec.down]
    return [f"{pre}.{p}.{s}" for p in paths for s in ("weight", "bias")]


def plan_extraction(model: nn.Module, module: ModuleMask, *, strict: bool = True) -> ExtractPlan:
    """Detect which FFN neurons and heads ``module`` keeps in each block of ``model``.

    Raises:
        InputError: if a unit is partly kept, or (``strict``) another masked tensor
            has masked-out entries; the message names the tensor.
    """
    family = family_of(model)
    blocks_name, blocks = hf_pruned.find_blocks(model, family)
    spec = FAMILY_SPECS[family][1]
    cfg = model.config  # type: ignore[attr-defined]
    hd = hf_pruned.head_dim_of(cfg)
    names = dict(model.named_parameters())
    _check_shapes(module, names)
    layers, covered = [], set()
    for i, block in enumerate(blocks):
        pre = f"{blocks_name}.{i}"
        n_ffn = hf_pruned.sub(block, spec.down).in_features
        n_heads = hf_pruned.sub(block, spec.o).in_features // hd
        group = n_heads // (hf_pruned.sub(block, spec.k).out_features // hd)
        masks = _unit_view(module.masks, pre, spec, hd, names)
        zero = torch.zeros(n_heads, dtype=torch.bool)
        try:
            ffn = _ffn_plan(masks, pre, spec, n_ffn)
            if group == 1:
                groups = _head_plan(masks, pre, spec, n_heads)
            else:
                groups, zero = _gqa_plan(masks, pre, spec, n_heads, group)
        except _PartialUnit as exc:
            raise _partial_error(exc) from None
        heads = groups.repeat_interleave(group)  # a kept group keeps all its query heads
        layers.append(
            LayerPlan(
                ffn.nonzero().flatten().tolist(),
                n_ffn,
                heads.nonzero().flatten().tolist(),
                n_heads,
                group,
                zero.nonzero().flatten().tolist(),
            )
        )
        covered.update(_layer_names(pre, spec))
    residue = _residue(module, covered, layers, blocks_name, spec, hd)
    if strict and residue:
        name, count = next(iter(residue.items()))
        raise InputError(
            f"module mask is not structured: {name!r} has {count} masked-out entries that are "
            "not whole FFN neurons or attention heads (found unstructured zeros; expected whole "
            "rows/columns). Use a structured module (modules.structured), the sparse path "
            "(modularevo.deploy.sparse), or strict=False to bake these zeros in"
        )
    return ExtractPlan(family, blocks_name, layers, residue)


def _unit_view(
    masks: Mapping[str, Tensor], pre: str, spec: LayerSpec, hd: int, params: Mapping[str, Tensor]
) -> dict[str, object]:
    """Masks of one block reshaped so that dim 0 / dim 1 index whole units (heads of
    ``hd`` rows: query heads in q and o, key/value heads in k and v).

    Parameters the block lacks map to ``_ABSENT``; unmasked ones are left out.
    """
    out: dict[str, object] = {n: _ABSENT for n in _layer_names(pre, spec) if n not in params}
    for p in (spec.q, spec.k, spec.v):
        for s in ("weight", "bias"):
            m = masks.get(f"{pre}.{p}.{s}")
            if m is not None:
                out[f"{pre}.{p}.{s}"] = m.reshape(-1, hd, *m.shape[1:])  # (heads, hd, [in])
    m = masks.get(f"{pre}.{spec.o}.weight")
    if m is not None:
        out[f"{pre}.{spec.o}.weight"] = m.reshape(m.shape[0], -1, hd)  # (out, heads, hd)
    for p in (*spec.up, spec.down):
        for s in ("weight", "bias"):
            if f"{pre}.{p}.{s}" in masks:
                out[f"{pre}.{p}.{s}"] = masks[f"{pre}.{p}.{s}"]
    return out


def _partial_error(exc: _PartialUnit) -> InputError:
    shown = ", ".join(map(str, exc.idx[:5])) + (" ..." if len(exc.idx) > 5 else "")
    return InputError(
        f"module mask is not structured around {exc.name!r}: {len(exc.idx)} {exc.unit}(s) "
        f"[{shown}] are partly kept (found a mix of kept and masked entries; expected each "
        "unit kept whole or dropped whole). Learn a structured module, or use the sparse path"
    )


def _check_shapes(module: ModuleMask, params: Mapping[str, Tensor]) -> None:
    for n, m in module.masks.items():
        if n not in params:
            raise InputError(f"module masks {n!r} but the model has no such parameter; same base?")
        if tuple(m.shape) != tuple(params[n].shape):
            raise InputError(
                f"mask {n!r} is {tuple(m.shape)} but the parameter is {tuple(params[n].shape)}"
            )


def _residue(
    module: ModuleMask,
    covered: set[str],
    layers: list[LayerPlan],
    blocks: str,
    spec: LayerSpec,
    hd: int,
) -> dict[str, int]:
    """Masked-out entries that survive extraction (outside kept units' slices are fine)."""
    out: dict[str, int] = {}
    for n, m in module.masks.items():
        if n not in covered:
            lost = int((~m).sum())
        else:
            lost = int((~_kept_part(n, m, layers, blocks, spec, hd)).sum())
        if lost:
            out[n] = lost
    return out


def _kept_part(
    name: str, m: Tensor, layers: list[LayerPlan], blocks: str, spec: LayerSpec, hd: int
) -> Tensor:
    i = int(name[len(blocks) + 1 :].split(".")[0])
    lp, sub = layers[i], name[len(blocks) + 1 :].split(".", 1)[1].rsplit(".", 1)[0]
    # query heads kept only as zeros inside a kept group: their masked entries are expected
    live = [h for h in lp.head_keep if h not in set(lp.head_zero)]
    heads = torch.tensor(live, dtype=torch.long)
    cols = (heads[:, None] * hd + torch.arange(hd)).flatten()
    kv = torch.tensor(lp.kv_keep, dtype=torch.long)
    kv_cols = (kv[:, None] * hd + torch.arange(hd)).flatten()
    ffn = torch.tensor(lp.ffn_keep, dtype=torch.long)
    if sub == spec.q:
        return m.index_select(0, cols)
    if sub in (spec.k, spec.v):
        return m.index_select(0, kv_cols)
    if sub == spec.o:
        return m.index_select(1, cols) if m.dim() == 2 else m
    if sub in spec.up:
        return m.index_select(0, ffn)
    return m.index_select(1, ffn) if m.dim() == 2 else m  # down
