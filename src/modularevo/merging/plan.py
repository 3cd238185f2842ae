"""The merge plan: every input opened and checked, every output tensor decided, no weight read.

:func:`plan_merge` opens the base and input models (headers only), checks tensor
names, shapes, vocabulary sizes, dtypes and module-mask shapes against each
other, and decides for each tensor name what the executor does with it:

* ``merge``: float tensor present in the inputs, merged by the method;
* ``copy``: non-float buffer (e.g. ``position_ids``), copied from the reference model;
* ``alias``: a tied weight (e.g. ``lm_head.weight`` stored beside identical input
  embeddings), written as a copy of the merged tensor it is tied to, so the tie holds.

Per-tensor, per-model parameter values are resolved by the plan
(:meth:`MergePlan.params_for`). All problems of one kind are reported together in one
error. The steps live beside this module, and their public names are importable from
here too:

* :mod:`.plan_types`: :class:`TensorTask` and :class:`MergePlan`;
* :mod:`.plan_inputs`: opening the inputs (``.bin``, LoRA adapters) and aligning names;
* :mod:`.plan_tasks`: the task of each output tensor, layer depths;
* :mod:`.plan_vocab`: tokenizer surgery's vocabulary;
* :mod:`.output_files`: ``config.json``, tokenizer and chat template of the output;
* :mod:`.plan_summary`: the ``--dry-run`` summary and memory estimate.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from modularevo.errors import ConfigError, InputError
from modularevo.io.reader import ModelReader
from modularevo.merging._checks import check_masks, open_masks
from modularevo.merging.backend import choose_backend, numpy_blockers
from modularevo.merging.output_files import CHATML, chat_template, write_config_updates
from modularevo.merging.plan_inputs import align_names, open_input
from modularevo.merging.plan_summary import memory_estimate, summary
from modularevo.merging.plan_tasks import decide_slice_tasks, decide_tasks, layer_depths
from modularevo.merging.plan_types import CHUNK, Action, MergePlan, TensorTask
from modularevo.merging.plan_vocab import check_same_vocab, plan_vocabulary, tokenizer_dir
from modularevo.merging.recipe_inputs import base_is_separate, effective_models, method_of
from modularevo.merging.recipe_schema import MergeConfig

__all__ = [
    "CHATML",
    "CHUNK",
    "Action",
    "MergePlan",
    "TensorTask",
    "align_names",
    "chat_template",
    "layer_depths",
    "memory_estimate",
    "plan_merge",
    "summary",
    "tokenizer_dir",
    "write_config_updates",
]

log = logging.getLogger(__name__)


def plan_merge(config: MergeConfig, recipe: dict[str, Any] | None = None) -> MergePlan:
    """Open and cross-check every input of ``config`` and decide every output tensor.

    Raises:
        InputError: missing/corrupted files, differing tensor names, shapes or
            vocabularies, mismatched masks (each problem listed).
        ConfigError: a per-tensor parameter rule leaves some tensor without a value.
    """
    method = method_of(config)
    entries = effective_models(config, method)
    if not config.slices and len(entries) != len(config.models):
        log.info("the base model is listed among the models; it is not merged against itself")
    keep_base = not base_is_separate(method)
    base_path = config.base_model
    errors: list[str] = []
    scratch: list[Path] = []
    base = open_input(base_path, errors, scratch) if base_path else None
    opened: dict[str, ModelReader | None] = {}
    for e in entries:  # a model used by several slices is opened once
        if e.model not in opened:
            opened[e.model] = open_input(e.model, errors, scratch, base_path)
    models = [opened[e.model] for e in entries]
    if errors:
        for d in scratch:
            shutil.rmtree(d, ignore_errors=True)
        raise InputError("cannot read the input models:\n" + "\n".join(f"  - {e}" for e in errors))
    readers = [m for m in models if m is not None]
    reference = base if base is not None else readers[0]
    for reader in dict.fromkeys(readers):  # a reader shared by several slices once
        if reader is not reference:
            align_names(reader, reference)
    src = tokenizer_dir(config, entries[0].model if entries else config.models[0].model)
    plan = MergePlan(
        config=config,
        recipe=recipe if recipe is not None else config.model_dump(exclude_defaults=True),
        method=method,
        entries=entries,
        base=None if keep_base else base,
        models=readers,
        reference=reference,
        tasks=[],
        source_dir=src,
        scratch=scratch,
    )
    try:
        if config.slices:
            if config.tokenizer_source not in (None, "base"):
                check_same_vocab(config, src, entries[0].model)
            decide_slice_tasks(plan, base)
        else:
            plan_vocabulary(plan)
            plan.tasks = decide_tasks(plan, base)
            plan.depths = layer_depths(reference.names())
        _check_tensor_params(plan)
        if plan.needs_thresholds():
            plan.threshold_densities()  # one number per model, checked before any read
        plan.chat_template = chat_template(
            config, [config.base_model or "", *(e.model for e in entries)]
        )
        if method.uses_masks:
            plan.masks = open_masks([e.mask for e in entries], reference.tensors)
        if plan.masks:
            check_masks(plan.masks, entries, reference, allow_other_base=config.allow_other_base)
        modes = {plan.chunk_mode(plan.params_for(t.name)) for t in plan.merge_tasks()}
        blockers = numpy_blockers(
            method, needs_thresholds=plan.needs_thresholds(), chunk_modes=list(modes)
        )
        if any(plan.aligns(t.name) for t in plan.tasks):
            blockers.append("tokenizer surgery aligns embedding rows on torch")
        plan.backend = choose_backend(config.backend, blockers)
    except BaseException:
        plan.close()  # readers and any .bin scratch folder
        raise
    return plan


def _check_tensor_params(plan: MergePlan) -> None:
    """Run the method's cross-parameter check on every tensor's resolved values, so
    per-tensor rules and gradients (e.g. linear weights that sum to 0 on one layer)
    fail here, before any weight is read, not midway through the merge."""
    check = plan.method.validate
    if check is None:
        return
    seen: set[str] = set()
    problems: list[str] = []
    for task in plan.merge_tasks():
        idx = [i for i, p in enumerate(task.present) if p or plan.base is not None]
        params = plan.params_for(task.name, idx)
        for problem in check(params, len(idx)):
            if problem not in seen:
                seen.add(problem)
                problems.append(f"tensor {task.name!r}: {problem}")
    if problems:
        raise ConfigError(problems)
