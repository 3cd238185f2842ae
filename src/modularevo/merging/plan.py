"""The merge plan: every input opened and checked, every output tensor decided, no weight read.

:func:`plan_merge` opens the base and input models (headers only), checks tensor
names, shapes, vocabulary sizes, dtypes and module-mask shapes against each
other, and decides for each tensor name what the executor does with it:

* ``merge``: float tensor present in the inputs, merged by the method;
* ``copy``: non-float buffer (e.g. ``position_ids``), copied from the reference model;
* ``alias``: a tied weight (e.g. ``lm_head.weight`` stored beside identical input
  embeddings), written as a copy of the merged tensor it is tied to, so the tie holds.

Per-tensor, per-model parameter values are resolved here (:meth:`MergePlan.params_for`).
All problems of one kind are reported together in one error.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from modularevo.errors import ConfigError, InputError
from modularevo.io.dtypes import BY_CODE, DType
from modularevo.io.hf_files import read_config
from modularevo.io.reader import ModelReader, model_dir, open_model
from modularevo.merging._checks import (
    check_masks,
    check_names,
    check_shapes,
    find_tied_groups,
    open_masks,
)
from modularevo.merging.backend import Backend, TorchBackend, choose_backend, numpy_blockers
from modularevo.merging.recipe import (
    MergeConfig,
    ModelEntry,
    effective_models,
    is_resolved,
    method_of,
    resolve_value,
)
from modularevo.merging.spec import MergeMethod

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

CHUNK = 1 << 18
"""Elements per chunk of a chunked merge (1 MiB of float32: a chunk's temporaries stay
in the CPU caches, which makes the many small passes of TIES several times faster)."""

Action = Literal["merge", "copy", "alias"]
_OUT_CODES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}


@dataclass(frozen=True)
class TensorTask:
    """What the executor does for one output tensor.

    Attributes:
        name: tensor name.
        action: ``merge``, ``copy`` or ``alias``.
        shape: tensor shape.
        out_code: dtype written (safetensors code, e.g. ``"F32"``).
        present: per input model, whether it holds this tensor.
        alias_of: for ``alias``, the merged tensor it copies.
    """

    name: str
    action: Action
    shape: tuple[int, ...]
    out_code: str
    present: tuple[bool, ...] = ()
    alias_of: str | None = None

    @property
    def numel(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    @property
    def out_info(self) -> DType:
        """The dtype written, as a :class:`~modularevo.io.dtypes.DType`."""
        return BY_CODE[self.out_code]

    @property
    def out_dtype(self) -> torch.dtype:
        """The dtype written, as a torch dtype (imports torch)."""
        return BY_CODE[self.out_code].torch


@dataclass
class MergePlan:
    """Everything the executor needs; built by :func:`plan_merge`."""

    config: MergeConfig
    recipe: dict[str, Any]
    method: MergeMethod
    entries: list[ModelEntry]
    base: ModelReader | None
    models: list[ModelReader]
    reference: ModelReader
    tasks: list[TensorTask]
    masks: list[Any] = field(default_factory=list)
    source_dir: Path | None = None
    notes: list[str] = field(default_factory=list)
    backend: Backend = field(default_factory=TorchBackend)

    @property
    def base_is_input(self) -> bool:
        """Whether the base tensor is passed to the method."""
        return self.base is not None

    def needs_thresholds(self) -> bool:
        """Whether the method wants each model's global |τ| threshold (pre-pass)."""
        if not self.method.global_stats:
            return False
        return self.method.capabilities.wants_thresholds(self.params_for(None))

    def elementwise(self, params: dict[str, Any]) -> bool:
        """Whether the method may be run on flat chunks of a tensor (declared by the method)."""
        return self.method.capabilities.is_elementwise(params) and not self.method.randomized

    def chunk_mode(self, params: dict[str, Any]) -> str | None:
        """How the executor may split a tensor for the method, given its parameters.

        ``"elementwise"``: any flat chunks (``Capabilities.elementwise``); ``"cuts"``: flat
        chunks after exact per-tensor top-k cuts of ``|τ|`` (``Capabilities.topk_cuts``,
        per-tensor TIES); ``None``: whole tensors.
        """
        if self.method.randomized:
            return None
        if self.method.capabilities.wants_cuts(params) and self.base is not None:
            return "cuts"
        return "elementwise" if self.elementwise(params) else None

    def params_for(self, name: str | None, idx: list[int] | None = None) -> dict[str, Any]:
        """The method's parameters for tensor ``name``: per-model ones as lists.

        Args:
            name: tensor name (``None``: plain values and rule defaults only).
            idx: the input models taking part (default: all).

        Raises:
            ConfigError: if a required value has no rule matching ``name``.
        """
        idx = list(range(len(self.entries))) if idx is None else idx
        out: dict[str, Any] = {}
        problems: list[str] = []
        for p in self.method.params:
            if p.kind == "per_model":
                vals = [self._value(p.name, p.default, name, self.entries[i]) for i in idx]
                missing = [
                    self.entries[i].model
                    for i, v in zip(idx, vals, strict=False)
                    if not is_resolved(v)
                ]
                out[p.name] = vals
            else:
                v = self._value(p.name, p.default, name, None)
                missing = [] if is_resolved(v) else ["parameters"]
                out[p.name] = v
            problems += [
                f"{where}: no value of {p.name!r} applies to tensor {name!r}; add a `default:` "
                "rule or a pattern matching it"
                for where in missing
            ]
        if problems:
            raise ConfigError(problems)
        return out

    def _value(self, key: str, default: Any, name: str | None, entry: ModelEntry | None) -> Any:
        for scope in ((entry.parameters,) if entry else ()) + (self.config.parameters,):
            if key in scope:
                v = resolve_value(scope[key], name)
                if is_resolved(v):
                    return v
        return default if default is not None else resolve_value({}, name)

    def threshold_densities(self) -> list[float]:
        """Each model's density for the global threshold pre-pass (plain values only).

        Raises:
            ConfigError: if a density is given per tensor (one global threshold per model).
        """
        key = "density"
        dens = self.params_for(None)[key]
        bad = [self.entries[i].model for i, d in enumerate(dens) if not is_resolved(d)]
        if bad:
            raise ConfigError(
                [f"{m}: {key!r} must be one number when trimming globally" for m in bad]
            )
        return [float(d) for d in dens]

    def merge_tasks(self) -> list[TensorTask]:
        """The tasks the method computes."""
        return [t for t in self.tasks if t.action == "merge"]

    def close(self) -> None:
        """Close every input reader."""
        for r in {id(r): r for r in [self.reference, *self.models]}.values():
            r.close()


def plan_merge(config: MergeConfig, recipe: dict[str, Any] | None = None) -> MergePlan:
    """Open and cross-check every input of ``config`` and decide every output tensor.

    Raises:
        InputError: missing/corrupted files, differing tensor names, shapes or
            vocabularies, mismatched masks (each problem listed).
        ConfigError: a per-tensor parameter rule leaves some tensor without a value.
    """
    method = method_of(config)
    entries = effective_models(config, method)
    if len(entries) != len(config.models):
        log.info("the base model is listed among the models; it is not merged against itself")
    keep_base = not method.needs_base and not method.max_models
    base_path = config.base_model
    errors: list[str] = []
    base = _open(base_path, errors) if base_path else None
    models = [_open(e.model, errors) for e in entries]
    if errors:
        raise InputError("cannot read the input models:\n" + "\n".join(f"  - {e}" for e in errors))
    readers = [m for m in models if m is not None]
    reference = base if base is not None else readers[0]
    src = model_dir(config.tokenizer_source or base_path or entries[0].model)
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
    )
    plan.tasks = _decide_tasks(plan, base)
    plan.masks = open_masks([e.mask for e in entries]) if method.uses_masks else []
    if plan.masks:
        check_masks(plan.masks, entries, reference, allow_other_base=config.allow_other_base)
    modes = {plan.chunk_mode(plan.params_for(t.name)) for t in plan.merge_tasks()}
    blockers = numpy_blockers(
        method, needs_thresholds=plan.needs_thresholds(), chunk_modes=list(modes)
    )
    plan.backend = choose_backend(config.backend, blockers)
    return plan


def _open(path: str, errors: list[str]) -> ModelReader | None:
    try:
        return open_model(path)
    except InputError as exc:
        errors.append(str(exc))
        return None


def _decide_tasks(plan: MergePlan, base: ModelReader | None) -> list[TensorTask]:
    ref = plan.reference
    cfg = plan.config
    readers = [base, *plan.models] if base is not None else plan.models
    labels = ([cfg.base_model or ""] if base is not None else []) + [e.model for e in plan.entries]
    configs = [read_config(model_dir(lbl)) for lbl in labels]
    dropped = check_names(readers, labels, missing=cfg.missing_tensors)
    plan.notes += [f"left out {n!r}: the base model lacks it" for n in dropped]
    check_shapes(readers, labels, configs)
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
        if name in tied:
            tasks.append(TensorTask(name, "alias", info.shape, dtype, present, tied[name]))
            plan.notes.append(f"{name!r} is tied to {tied[name]!r}: written as a copy of it")
        else:
            tasks.append(TensorTask(name, "merge", info.shape, dtype, present))
    return _aliases_after_targets(tasks)


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


def memory_estimate(plan: MergePlan) -> int:
    """A rough upper bound of the merge's working memory in bytes (excluding Python/torch).

    The K+1 inputs of the largest tensor are held (read into fresh buffers);
    whole-tensor methods add about 2K+3 float32 temporaries of it, chunked ones
    (elementwise methods, per-tensor TIES) a few chunks. The writer queue holds up
    to two output tensors, one more is being written.
    """
    merged = plan.merge_tasks()
    if not plan.tasks:
        return 0
    k = len(plan.models)
    largest = max(plan.tasks, key=lambda t: t.numel)
    out_bytes = largest.numel * largest.out_info.itemsize * 3
    if not merged:
        return out_bytes
    big = max(merged, key=lambda t: t.numel).numel
    try:
        chunked = plan.chunk_mode(plan.params_for(None)) is not None
    except ConfigError:
        chunked = False
    inputs = (k + 1) * big * 4
    work = (2 * k + 4) * min(big, CHUNK) * 4 if chunked else big * 4 * (2 * k + 3)
    return inputs + work + out_bytes


def summary(plan: MergePlan) -> dict[str, Any]:
    """What the merge will do, for ``--dry-run``: counts, sizes, parameters, memory."""
    by_action: dict[str, int] = {}
    out_bytes = 0
    for t in plan.tasks:
        by_action[t.action] = by_action.get(t.action, 0) + 1
        out_bytes += t.numel * t.out_info.itemsize
    try:
        params: Any = plan.params_for(None)
    except ConfigError:
        params = "per-tensor rules (see the recipe)"
    return {
        "method": plan.method.name,
        "backend": plan.backend.name,
        "paper": plan.method.paper,
        "base_model": plan.config.base_model,
        "models": [e.model for e in plan.entries],
        "tensors": by_action,
        "parameters_total": sum(t.numel for t in plan.tasks),
        "output_bytes": out_bytes,
        "global_threshold_prepass": plan.needs_thresholds(),
        "memory_estimate_bytes": memory_estimate(plan),
        "params": params,
        "notes": list(plan.notes),
    }
