"""mergekit's ``slices:``: output layers taken from layer ranges of the inputs.

A ``slices:`` recipe lists output slices; each takes ``layer_range: [start, end)`` from
one or more source models (all spanning the same number of layers) and merges them layer
by layer with the recipe's method. The output stacks the slices in order and renumbers
their layers from 0, so ``passthrough`` with one source per slice builds a deeper or
shallower model from pieces of others (a "frankenmerge"), and a merge method with two
sources per slice merges each range on its own (as mergekit 0.1.5 plans it)::

    slices:
      - sources: [{model: ./a, layer_range: [0, 8]}]
      - sources: [{model: ./b, layer_range: [4, 12]}]
    merge_method: passthrough

The layer stack is found from the tensor names: the dotted number with the most
distinct values behind one prefix (``model.layers.7.mlp...`` → ``model.layers``).
Tensors outside it are taken from the first slice's sources when they are embeddings
(``embed``, ``wte``, ``wpe`` in the name) and from the last slice's otherwise (final
norm, head), as mergekit takes an architecture's pre- and post-weights. Layer ``i`` of
a slice of ``n`` layers has depth ``t = i / (n − 1)`` (1 when ``n = 1``) for gradients;
tensors outside the stack have depth 0.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from modularevo.errors import InputError
from modularevo.io.reader import ModelReader
from modularevo.merging.recipe_inputs import slice_base_range
from modularevo.merging.recipe_schema import MergeConfig, ModelEntry, SliceEntry

_LAYER = re.compile(r"^(.*?)(?:^|\.)(\d+)\.(.+)$")
_PRE = ("embed", "wte", "wpe", "word_embeddings", "position_embeddings", "token_type")


@dataclass(frozen=True)
class SlicedTensor:
    """One output tensor of a ``slices:`` merge.

    Attributes:
        name: the output name (layers renumbered).
        sources: per input entry, the tensor name read from it (``None``: not in its slice).
        base_source: the tensor name read from the base model (``None``: no base).
        depth: the layer depth ``t`` for gradients.
    """

    name: str
    sources: tuple[str | None, ...]
    base_source: str | None
    depth: float


def layer_stack(names: Sequence[str]) -> tuple[str, int]:
    """The prefix of the tensors' layer stack and its number of layers (``("", 0)``: none)."""
    layers: dict[str, set[int]] = {}
    for n in names:
        m = _LAYER.match(n)
        if m:
            layers.setdefault(m.group(1), set()).add(int(m.group(2)))
    if not layers:
        return "", 0
    prefix = max(layers, key=lambda p: len(layers[p]))
    return prefix, max(layers[prefix]) + 1


def _layer_name(prefix: str, i: int, suffix: str) -> str:
    return f"{prefix}.{i}.{suffix}" if prefix else f"{i}.{suffix}"


def plan_slices(
    cfg: MergeConfig,
    entries: Sequence[ModelEntry],
    readers: Sequence[ModelReader],
    base: ModelReader | None,
) -> tuple[list[SlicedTensor], int]:
    """Every output tensor of ``cfg.slices`` and the output's number of layers.

    Args:
        cfg: a recipe with ``slices``.
        entries: the merged inputs (one :class:`SliceEntry` per non-base slice source).
        readers: their readers, in the same order.
        base: the base model's reader when the method takes the base separately.

    Raises:
        InputError: a layer range beyond a model's layers, or a tensor missing from a
            source or differing in shape (every problem listed).
    """
    assert cfg.slices
    ref = readers[0] if readers else base
    assert ref is not None
    prefix, _ = layer_stack(ref.names())
    if not prefix and not any(_LAYER.match(n) for n in ref.names()):
        raise InputError(f"slices: found no numbered layers in {ref.path}'s tensor names")
    problems: list[str] = []
    for e, r in zip(entries, readers, strict=True):
        assert isinstance(e, SliceEntry)
        depth = layer_stack(r.names())[1]
        if e.layer_range[1] > depth:
            problems.append(
                f"slices.{e.slice_index}: layer_range {list(e.layer_range)} of {e.model} goes "
                f"beyond its {depth} layers"
            )
    if problems:
        raise InputError("slices:\n" + "\n".join(f"  - {p}" for p in problems))
    by_slice = [[i for i, e in enumerate(entries) if getattr(e, "slice_index", -1) == s]
                for s in range(len(cfg.slices))]  # fmt: skip
    out: list[SlicedTensor] = []
    outside = [n for n in ref.names() if not _in_stack(n, prefix)]
    for n in outside:
        s = 0 if any(k in n for k in _PRE) else len(cfg.slices) - 1
        out.append(_tensor(cfg, entries, by_slice[s], s, n, lambda e, n=n: n, base, 0.0))
    j = 0
    for s, sl in enumerate(cfg.slices):
        start = sl.sources[0].layer_range[0]
        first = next(r for i, r in enumerate(readers) if i in by_slice[s]) if by_slice[s] else ref
        count = sl.sources[0].layer_range[1] - start
        for off in range(count):
            lead = f"{prefix}.{start + off}." if prefix else f"{start + off}."
            suffixes = [n[len(lead) :] for n in first.names() if n.startswith(lead)]
            depth = off / (count - 1) if count > 1 else 1.0
            for suffix in suffixes:
                name = _layer_name(prefix, j, suffix)

                def src(e: SliceEntry, off: int = off, suffix: str = suffix) -> str:
                    return _layer_name(prefix, e.layer_range[0] + off, suffix)

                out.append(_tensor(cfg, entries, by_slice[s], s, name, src, base, depth))
            j += 1
    _check_sources(out, entries, readers, base, problems)
    if problems:
        raise InputError("slices:\n" + "\n".join(f"  - {p}" for p in problems[:20]))
    return out, j


def _in_stack(name: str, prefix: str) -> bool:
    m = _LAYER.match(name)
    return bool(m) and m.group(1) == prefix


def _tensor(cfg, entries, members, s, name, src, base, depth) -> SlicedTensor:
    sources = tuple(
        src(_as_slice(entries[i])) if i in members else None for i in range(len(entries))
    )
    base_source = None
    if base is not None:
        rng = slice_base_range(cfg, s)
        if rng is not None:
            base_source = src(SliceEntry(model="", layer_range=rng, slice_index=s))
        elif members:
            base_source = src(_as_slice(entries[members[0]]))  # the first source's layers
    return SlicedTensor(name, sources, base_source, depth)


def _as_slice(entry: ModelEntry) -> SliceEntry:
    assert isinstance(entry, SliceEntry)
    return entry


def _check_sources(
    tensors: list[SlicedTensor],
    entries: Sequence[ModelEntry],
    readers: Sequence[ModelReader],
    base: ModelReader | None,
    problems: list[str],
) -> None:
    for t in tensors:
        shapes = set()
        pairs = [(readers[i], entries[i].model, n) for i, n in enumerate(t.sources) if n]
        if base is not None and t.base_source is not None:
            pairs.append((base, "base_model", t.base_source))
        for reader, label, n in pairs:
            if n not in reader:
                problems.append(f"{label} has no tensor {n!r} (for output {t.name!r})")
            else:
                shapes.add(tuple(reader.tensors[n].shape))
        if len(shapes) > 1:
            problems.append(f"output {t.name!r}: its sources have shapes {sorted(shapes)}")
