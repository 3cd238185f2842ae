"""Decide what the executor does with every output tensor: ``merge``, ``copy`` or ``alias``.

:func:`decide_tasks` cross-checks the inputs' tensor names and shapes and makes one
:class:`~.plan_types.TensorTask` per tensor of the reference model (tied weights as
aliases of the tensor they copy); :func:`decide_slice_tasks` does the same for a
``slices:`` recipe, whose output stacks layer ranges (:mod:`.slices`).
:func:`layer_depths` places each layer tensor in its stack, for layer gradients.
"""

from __future__ import annotations

import re

from modularevo.errors import ConfigError, InputError
from modularevo.io.hf_files import read_config
from modularevo.io.reader import ModelReader, model_dir
from modularevo.merging._checks import check_names, check_shapes, find_tied_groups
from modularevo.merging.plan_types import Action, MergePlan, TensorTask
from modularevo.merging.slices import plan_slices

_OUT_CODES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}


def decide_tasks(plan: MergePlan, base: ModelReader | None) -> list[TensorTask]:
    """The task of every tensor of the reference model in a ``models:`` merge.

    The inputs' tensor names (under ``missing_tensors``) and shapes are cross-checked
    first. A non-float tensor is copied; a float one is merged, or written as an alias
    of the tensor it is tied to; a vocabulary tensor re-indexed by tokenizer surgery
    gets the output vocabulary's row count. Aliases follow the tensor they copy.

    Args:
        plan: the plan being built; its notes get the left-out and tied tensors.
        base: the base model's reader, also when the method does not take it separately.

    Raises:
        InputError: differing tensor names or shapes, or an input model that shares no
            tensor with the base.
    """
    ref = plan.reference
    cfg = plan.config
    readers = [base, *plan.models] if base is not None else plan.models
    labels = ([cfg.base_model or ""] if base is not None else []) + [e.model for e in plan.entries]
    configs = [read_config(model_dir(lbl)) for lbl in labels]
    dropped = check_names(readers, labels, missing=cfg.missing_tensors)
    plan.notes += [f"left out {n!r}: the base model lacks it" for n in dropped]
    check_shapes(readers, labels, configs, vocab_aligned=plan.vocab is not None)
    out_code = _OUT_CODES.get(cfg.output_dtype or "")
    tied = find_tied_groups(readers, configs[0]) if ref is not None else {}
    tasks: list[TensorTask] = []
    for name in ref.names():
        info = ref.tensors[name]
        present = tuple(name in m for m in plan.models)
        if not info.is_float:
            tasks.append(TensorTask(name, "copy", info.shape, info.code, present))
            continue
        dtype = out_code or info.code
        if plan.aligns(name):
            assert plan.vocab is not None
            info_shape = (plan.vocab.size, *info.shape[1:])
            if name in tied:
                tasks.append(TensorTask(name, "alias", info_shape, dtype, present, tied[name]))
            else:
                tasks.append(TensorTask(name, "merge", info_shape, dtype, present))
            continue
        if name in tied:
            tasks.append(TensorTask(name, "alias", info.shape, dtype, present, tied[name]))
            plan.notes.append(f"{name!r} is tied to {tied[name]!r}: written as a copy of it")
        else:
            tasks.append(TensorTask(name, "merge", info.shape, dtype, present))
    _check_models_contribute(plan, tasks)
    return _aliases_after_targets(tasks)


def _check_models_contribute(plan: MergePlan, tasks: list[TensorTask]) -> None:
    """Refuse a merge in which some input model shares no tensor with the base.

    With ``missing_tensors: base`` such a model would silently contribute the base's
    values everywhere, and a merge of only such models writes the base back unchanged.

    Raises:
        InputError: naming each model and a few of its tensor names beside the base's.
    """
    merged = [t for t in tasks if t.action == "merge"]
    if plan.base is None or not merged:
        return
    idle = [i for i in range(len(plan.entries)) if not any(t.present[i] for t in merged)]
    if not idle:
        return
    base_names = [t.name for t in merged[:2]]
    problems = [
        f"{plan.entries[i].model}: none of its tensors is a float tensor of the base "
        f"(it has e.g. {plan.models[i].names()[:2]}, the base {base_names})"
        for i in idle
    ]
    raise InputError(
        "some input models share no tensor with the base model, so the merge would write the "
        "base back for them:\n"
        + "\n".join(f"  - {p}" for p in problems)
        + "\nMerge models of the base's architecture saved with the same tensor names "
        "(a fine-tune of this base), or fix `base_model`."
    )


def _aliases_after_targets(tasks: list[TensorTask]) -> list[TensorTask]:
    """Order aliases right after the tensor they copy, so it is held only briefly."""
    aliases: dict[str, list[TensorTask]] = {}
    for t in tasks:
        if t.action == "alias" and t.alias_of:
            aliases.setdefault(t.alias_of, []).append(t)
    out: list[TensorTask] = []
    for t in tasks:
        if t.action == "alias":
            continue
        out.append(t)
        out.extend(aliases.get(t.name, []))
    return out


def decide_slice_tasks(plan: MergePlan, base: ModelReader | None) -> None:
    """Tasks, depths and the output layer count of a ``slices:`` merge (:mod:`.slices`)."""
    if plan.method.global_stats and plan.needs_thresholds():
        raise ConfigError(["slices: a global trim (trim_scope: global) needs `models:`"])
    sliced, layers = plan_slices(plan.config, plan.entries, plan.models, plan.base)
    out_code = _OUT_CODES.get(plan.config.output_dtype or "")
    for t in sliced:
        i = next((i for i, n in enumerate(t.sources) if n is not None), None)
        reader, name = (plan.models[i], t.sources[i]) if i is not None else (base, t.base_source)
        assert reader is not None
        assert name is not None
        info = reader.tensors[name]
        present = tuple(n is not None for n in t.sources)
        action: Action = "merge" if info.is_float else "copy"
        code = (out_code or info.code) if info.is_float else info.code
        plan.tasks.append(TensorTask(t.name, action, info.shape, code, present,
                                     sources=t.sources, base_source=t.base_source))  # fmt: skip
        if t.depth:
            plan.depths[t.name] = t.depth
    ref_config = read_config(model_dir(plan.entries[0].model if plan.entries else ""))
    key = next((k for k in _LAYER_KEYS if k in ref_config), None)
    if key is not None:
        plan.config_updates[key] = layers
    plan.notes.append(f"slices: {len(plan.config.slices or [])} slice(s), {layers} output layers")


_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")


_LAYER = re.compile(r"^(.*?)(?:^|\.)(\d+)(?:\.|$)")


def layer_depths(names: list[str]) -> dict[str, float]:
    """Each layer tensor's depth ``t`` in [0, 1] for mergekit's layer gradients.

    A tensor's layer is the first dotted number in its name (``model.layers.7.mlp``);
    tensors sharing the text before it form one stack of L layers, and layer i gets
    ``i / (L - 1)`` (1 when L = 1), as mergekit 0.1.5 plans a full-depth slice.
    Tensors outside a stack (embeddings, final norm, head) are absent: depth 0, as in
    mergekit.
    """
    found: dict[str, tuple[str, int]] = {}
    for n in names:
        m = _LAYER.match(n)
        if m:
            found[n] = (m.group(1), int(m.group(2)))
    size: dict[str, int] = {}
    for prefix, i in found.values():
        size[prefix] = max(size.get(prefix, 0), i + 1)
    return {
        n: (i / (size[prefix] - 1) if size[prefix] > 1 else 1.0) for n, (prefix, i) in found.items()
    }
