"""The merge plan's value types: :class:`TensorTask` (one output tensor) and :class:`MergePlan`.

A :class:`MergePlan` is built by :func:`.plan.plan_merge` and read by the executor
(:mod:`.stream`, :mod:`.apply`). Besides the opened inputs and the tasks, it resolves
the method's parameters per tensor and per model (:meth:`MergePlan.params_for`, from
the recipe's rules, :mod:`.param_rules`) and says how a tensor may be split into
chunks (:meth:`MergePlan.chunk_mode`).
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from modularevo.errors import ConfigError
from modularevo.io.dtypes import BY_CODE, DType
from modularevo.io.reader import ModelReader
from modularevo.merging.backend import Backend, TorchBackend
from modularevo.merging.param_rules import is_resolved, resolve_value
from modularevo.merging.recipe_schema import MergeConfig, ModelEntry
from modularevo.merging.spec import MergeMethod, Param
from modularevo.merging.tokenizer import VocabPlan

if TYPE_CHECKING:
    import torch


CHUNK = 1 << 18
"""Elements per chunk of a chunked merge (1 MiB of float32: a chunk's temporaries stay
in the CPU caches, which makes the many small passes of TIES several times faster)."""

Action = Literal["merge", "copy", "alias"]


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
    """Everything the executor needs; built by :func:`.plan.plan_merge`."""

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
