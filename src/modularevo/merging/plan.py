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

import json
import logging
import math
import re
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from modularevo.errors import ConfigError, InputError
from modularevo.io.dtypes import BY_CODE, DType
from modularevo.io.hf_files import TOKENIZER_FILES, read_config, vocab_size
from modularevo.io.reader import ModelReader, model_dir, open_model
from modularevo.io.torch_bin import bin_files, convert_bin
from modularevo.merging._checks import (
    check_masks,
    check_names,
    check_shapes,
    find_tied_groups,
    open_masks,
    vocab_tensors,
)
from modularevo.merging.backend import Backend, TorchBackend, choose_backend, numpy_blockers
from modularevo.merging.lora import adapter_base, is_lora_adapter, materialise_adapter
from modularevo.merging.recipe import (
    MergeConfig,
    ModelEntry,
    base_is_separate,
    effective_models,
    is_resolved,
    method_of,
    resolve_value,
)
from modularevo.merging.slices import plan_slices
from modularevo.merging.spec import MergeMethod, Param
from modularevo.merging.tokenizer import (
    TokenizerLoadError,
    VocabPlan,
    build_vocab_plan,
    save_tokenizer,
)

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
        sources: in a ``slices:`` merge, per input model the tensor name read from it
            (``None``: the model is not part of this tensor's slice); empty otherwise,
            when every model is read at ``name``.
        base_source: in a ``slices:`` merge, the tensor name read from the base.
    """

    name: str
    action: Action
    shape: tuple[int, ...]
    out_code: str
    present: tuple[bool, ...] = ()
    alias_of: str | None = None
    sources: tuple[str | None, ...] = ()
    base_source: str | None = None

    def source(self, i: int) -> str:
        """The tensor name read from input model ``i``."""
        return (self.sources[i] if self.sources else None) or self.name

    def inputs(self, k: int, has_base: bool) -> list[int]:
        """The input models (of ``k``) the method gets for this tensor: in a ``slices:``
        merge those of its slice; otherwise all when there is a base (a model lacking
        the tensor stands in with the base's value), else those holding it."""
        if self.sources:
            return [i for i, src in enumerate(self.sources) if src is not None]
        return [i for i in range(k) if has_base or self.present[i]]

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
    depths: dict[str, float] = field(default_factory=dict)
    config_updates: dict[str, Any] = field(default_factory=dict)
    chat_template: str | None = None
    scratch: list[Path] = field(default_factory=list)
    source_dir: Path | None = None
    notes: list[str] = field(default_factory=list)
    backend: Backend = field(default_factory=TorchBackend)
    vocab: VocabPlan | None = None
    vocab_names: frozenset[str] = frozenset()

    def aligns(self, name: str) -> bool:
        """Whether tensor ``name``'s rows are re-indexed to the output vocabulary."""
        return self.vocab is not None and not self.vocab.identity and name in self.vocab_names

    @property
    def input_paths(self) -> list[str]:
        """The model paths in the order of a merged tensor's inputs (base first if any)."""
        base = [self.config.base_model or ""] if self.base is not None else []
        return base + [e.model for e in self.entries]

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
                vals = [self._value(p, name, self.entries[i]) for i in idx]
                missing = [
                    self.entries[i].model
                    for i, v in zip(idx, vals, strict=False)
                    if not is_resolved(v)
                ]
                out[p.name] = vals
            else:
                v = self._value(p, name, None)
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

    def _value(self, p: Param, name: str | None, entry: ModelEntry | None) -> Any:
        t = self.depths.get(name, 0.0) if name is not None else 0.0
        for scope in ((entry.parameters,) if entry else ()) + (self.config.parameters,):
            if p.name in scope:
                v = resolve_value(scope[p.name], name, t, takes_list=p.takes_list)
                if is_resolved(v):
                    return v
        return p.default if p.default is not None else resolve_value({}, name)

    def threshold_densities(self) -> list[float]:
        """Each model's density for the global threshold pre-pass (plain values only).

        Raises:
            ConfigError: if a density is given per tensor (one global threshold per model).
        """
        key = "density"
        dens = self.params_for(None)[key]
        raw = [e.parameters.get(key, self.config.parameters.get(key)) for e in self.entries]
        bad = [
            self.entries[i].model
            for i, d in enumerate(dens)
            if not is_resolved(d) or isinstance(raw[i], (list, dict))  # rules, gradients
        ]
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
        for d in self.scratch:  # safetensors re-saved from .bin inputs
            shutil.rmtree(d, ignore_errors=True)


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
    base = _open(base_path, errors, scratch) if base_path else None
    opened: dict[str, ModelReader | None] = {}
    for e in entries:  # a model used by several slices is opened once
        if e.model not in opened:
            opened[e.model] = _open(e.model, errors, scratch, base_path)
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
                _check_same_vocab(config, src, entries[0].model)
            _decide_slice_tasks(plan, base)
        else:
            _plan_vocabulary(plan)
            plan.tasks = _decide_tasks(plan, base)
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


def tokenizer_dir(config: MergeConfig, first_model: str) -> Path | None:
    """The folder whose config and tokenizer files the output gets.

    ``tokenizer_source`` unset, ``base`` or ``union`` (mergekit's keywords): the base
    model's folder (the first model's without a base); otherwise the named model folder
    (tokenizer surgery then saves the output tokenizer over its files, see
    :func:`_plan_vocabulary`).

    Raises:
        InputError: the named source is not a model folder.
    """
    source = config.vocabulary_source
    if source is None or source in ("base", "union"):
        return model_dir(config.base_model or first_model)
    found = model_dir(source)
    if found is None:
        raise InputError(
            f"tokenizer_source {source!r} is not a model folder; expected `base`, `union` or "
            "the folder of a model whose tokenizer the output should get"
        )
    return found


def _plan_vocabulary(plan: MergePlan) -> None:
    """Tokenizer surgery (:mod:`.tokenizer`): the output vocabulary, each input's row map
    and the vocabulary tensors to re-index; nothing without ``tokenizer_source`` or
    ``tokenizer:``.

    A ``tokenizer_source`` (``base`` or a folder) whose tokenizer transformers cannot
    load falls back to copying its files, which needs every model to share the base's
    vocabulary size.

    Raises:
        InputError: a tokenizer cannot be loaded (``union``, ``tokenizer:``), the
            source's vocabulary size differs in the fallback, or surgery meets a feature
            it does not combine with yet (module masks, a global trim).
    """
    cfg = plan.config
    if cfg.vocabulary_source is None:
        return
    paths = plan.input_paths
    base = cfg.base_model if cfg.base_model in (*paths, None) else None
    try:
        vocab = build_vocab_plan(cfg, base or None, paths)
    except TokenizerLoadError as exc:
        if cfg.tokenizer is not None or cfg.vocabulary_source == "union":
            raise
        _check_same_vocab(cfg, plan.source_dir, paths[0])
        plan.notes.append(f"{exc}; its tokenizer files are copied as they are")
        return
    ref_n = vocab_size(read_config(model_dir(paths[0])))
    names = frozenset(vocab_tensors(plan.reference, ref_n))
    if not vocab.identity and (plan.method.uses_masks or plan.needs_thresholds()):
        raise InputError(
            "tokenizer surgery with module masks or a global trim (trim_scope: global) is "
            "not supported yet"
        )
    plan.vocab, plan.vocab_names = vocab, names
    plan.config_updates["vocab_size"] = vocab.size
    plan.notes.append(
        f"tokenizer surgery ({cfg.vocabulary_source}): {vocab.n_tokens} tokens, "
        f"{vocab.size} rows; "
        + ("no row moves" if vocab.identity else f"re-indexed: {', '.join(sorted(names))}")
    )


def _check_same_vocab(config: MergeConfig, source: Path | None, first: str) -> None:
    """Copying a tokenizer's files needs its vocabulary size to be the merged models'."""
    ref = model_dir(config.base_model or first)
    want, got = vocab_size(read_config(ref)), vocab_size(read_config(source))
    if want is not None and got is not None and want != got:
        raise InputError(
            f"tokenizer_source {config.vocabulary_source!r} has a vocabulary of {got} tokens "
            f"but the merged models have {want}, and its tokenizer cannot be loaded to align "
            "the embeddings to it (tokenizer surgery needs tokenizer.json or tokenizer.model)"
        )


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


def _open(
    path: str, errors: list[str], scratch: list[Path], base: str | None = None
) -> ModelReader | None:
    """Open a model; one holding only ``.bin`` weights is first re-saved as safetensors
    into a scratch folder (:mod:`modularevo.io.torch_bin`), and a PEFT LoRA adapter is
    applied to ``base`` there (:mod:`modularevo.merging.lora`); ``plan.close()`` removes it."""
    if is_lora_adapter(path):
        tmp = Path(tempfile.mkdtemp(prefix="modularevo-lora-"))
        scratch.append(tmp)
        log.info("%s is a LoRA adapter: applying it to its base in %s", path, tmp)
        try:
            return open_model(materialise_adapter(path, adapter_base(path, base), tmp))
        except InputError as exc:
            errors.append(str(exc))
            return None
    try:
        return open_model(path)
    except InputError as exc:
        bins = bin_files(path)
        if not bins:
            errors.append(str(exc))
            return None
    tmp = Path(tempfile.mkdtemp(prefix="modularevo-bin-"))
    scratch.append(tmp)
    log.info("%s holds .bin weights: re-saving them as safetensors in %s", path, tmp)
    try:
        return open_model(convert_bin(bins, tmp))
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


def align_names(reader: ModelReader, reference: ModelReader) -> dict[str, str]:
    """Rename ``reader``'s tensors to ``reference``'s naming of the same weights, in place.

    A fine-tune saved as a bare encoder names ``encoder.layer.0…`` where its masked-LM base
    names ``bert.encoder.layer.0…``; :func:`~modularevo.modules.naming.match_names` finds
    the one prefix rule that maps them. Nothing changes when the names already agree or
    no rule maps at least half of them (another architecture: refused later, by name).

    Returns:
        old name -> new name for the renamed tensors (empty when nothing changed).
    """
    ref = set(reference.tensors)
    own = list(reader.tensors)
    if sum(n in ref for n in own) * 2 >= len(own):
        return {}
    # deferred: modularevo.modules imports torch; merges whose names agree stay torch-free
    from modularevo.modules.naming import match_names

    mapping = match_names(own, ref)
    renamed = {old: new for old, new in mapping.items() if old != new}
    if not renamed or len(set(mapping.values())) != len(mapping):
        return {}
    reader.tensors = {mapping.get(n, n): info for n, info in reader.tensors.items()}
    old, new = next(iter(renamed.items()))
    log.info("%s: %d tensors named as the base names them (e.g. %r -> %r)",
             reader.path, len(renamed), old, new)  # fmt: skip
    return renamed


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


def _decide_slice_tasks(plan: MergePlan, base: ModelReader | None) -> None:
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


def write_config_updates(plan: MergePlan, folder: Path) -> None:
    """Apply the plan's changes to the copied files: ``config.json``'s layer count (a
    ``slices:`` merge) or vocabulary size (tokenizer surgery), the output tokenizer
    (surgery: saved in place of the copied tokenizer files) and the recipe's
    ``chat_template``."""
    if plan.vocab is not None:
        for n in TOKENIZER_FILES:
            (folder / n).unlink(missing_ok=True)
        save_tokenizer(plan.vocab, folder)
    path = folder / "config.json"
    if plan.config_updates and path.is_file():
        cfg = json.loads(path.read_text(encoding="utf-8"))
        cfg.update(plan.config_updates)
        path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if plan.chat_template is None:
        return
    if (folder / "chat_template.jinja").is_file():  # transformers >= 4.43 reads this first
        (folder / "chat_template.jinja").write_text(plan.chat_template, encoding="utf-8")
    tok = folder / "tokenizer_config.json"
    data = json.loads(tok.read_text(encoding="utf-8")) if tok.is_file() else {}
    data["chat_template"] = plan.chat_template
    tok.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""The ChatML layout (``<|im_start|>role\\n...<|im_end|>``), for ``chat_template: chatml``."""


def chat_template(config: MergeConfig, models: list[str]) -> str | None:
    """The chat template the output gets, from the recipe's ``chat_template``.

    Jinja text (it holds ``{``) is used as written; ``chatml`` is :data:`CHATML`;
    ``auto`` takes the template most of ``models`` share (mergekit 0.1.5's rule), or
    none when no model has one.

    Raises:
        ConfigError: any other name (mergekit's other built-in names are not
            supported yet; write the template's Jinja text instead).
    """
    value = config.chat_template
    if value is None or "{" in value:
        return value
    if value == "chatml":
        return CHATML
    if value == "auto":
        found = [t for t in (_model_template(m) for m in models if m) if t]
        return Counter(found).most_common(1)[0][0] if found else None
    raise ConfigError([f"chat_template: {value!r} is not supported yet (see validate)"])


def _model_template(path: str) -> str | None:
    folder = model_dir(path)
    if folder is None:
        return None
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text(encoding="utf-8").strip()
    tok = folder / "tokenizer_config.json"
    try:
        template = json.loads(tok.read_text(encoding="utf-8")).get("chat_template")
    except (OSError, ValueError):
        return None
    if isinstance(template, list):  # named templates: take the default one
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    return template.strip() if isinstance(template, str) else None


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
