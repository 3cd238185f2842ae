"""The contract between merge methods (pure tensor functions) and the executor.

A merge method is a function that merges ONE tensor name across K input models::

    fn(tensors, base, *, generators, masks, thresholds, **params) -> Tensor

* ``tensors``: K float32 tensors of the same shape (the fine-tuned / input models).
* ``base``: the base model's float32 tensor, or ``None`` for base-free methods.
* ``generators``: K ``torch.Generator``s, one per input model, seeded from
  (seed, tensor name, model index) by the executor, so results do not depend on
  the order of work or the thread count. ``None`` for deterministic methods.
* ``masks``: K bool tensors (module masks, same shape) or ``None`` entries; only
  methods with ``uses_masks=True`` receive them.
* ``thresholds``: K floats, each model's global |task vector| threshold computed
  by the executor in a pre-pass over all tensors (``global_stats=True`` methods,
  e.g. TIES with ``trim_scope: global``); otherwise ``None``.
* ``**params``: the method's declared parameters. A ``per_model`` parameter
  arrives as a list of K floats; a ``global`` one as a scalar.

The function returns the merged float32 tensor and must not modify its inputs.
A method whose function uses array operators only (``+ - * /`` and in-place forms,
no torch calls) may declare ``extras={"numpy": True}``: the executor then may pass
float32 numpy arrays instead of tensors and merge without importing torch
(:mod:`modularevo.merging.backend`).
Methods are registered in :data:`MERGE_METHODS` with their parameter schema and
paper link, which ``modularevo ls`` prints.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from modularevo.registry import Registry

if TYPE_CHECKING:
    pass

MergeFn = Callable[..., Any]
"""A merge method's tensor function (returns a float32 tensor or numpy array)."""


@dataclass(frozen=True)
class Param:
    """One parameter of a merge method.

    Attributes:
        name: key in YAML (``parameters:`` of the merge or of one model).
        kind: ``per_model`` (a value per input model, e.g. ``weight``) or ``global``.
        default: value used when the config gives none; ``None`` means required.
        ge, le: inclusive bounds checked at config time.
        choices: allowed values for string parameters.
        doc: one line shown by ``modularevo ls``.
    """

    name: str
    kind: Literal["per_model", "global"]
    default: Any = None
    ge: float | None = None
    le: float | None = None
    choices: tuple[str, ...] = ()
    doc: str = ""

    takes_list: ClassVar[bool] = False
    """Whether a YAML list is one value of this parameter (e.g. CABS ``order``), not a
    mergekit layer gradient."""

    def check(self, value: Any) -> str | None:
        """Return a problem description if ``value`` is out of range, else ``None``."""
        if self.choices:
            if value not in self.choices:
                return f"must be one of {', '.join(map(repr, self.choices))}"
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be a number, got {type(value).__name__}"
        if self.ge is not None and value < self.ge:
            return f"must be >= {self.ge}"
        if self.le is not None and value > self.le:
            return f"must be <= {self.le}"
        return None


@dataclass(frozen=True)
class MergeMethod:
    """A registered merge method: the tensor function plus what the executor must know."""

    name: str
    fn: MergeFn
    paper: str
    summary: str
    params: tuple[Param, ...] = ()
    needs_base: bool = True
    uses_masks: bool = False
    randomized: bool = False
    global_stats: bool = False
    min_models: int = 1
    max_models: int | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def param(self, name: str) -> Param:
        """The parameter called ``name``; raises ``KeyError`` if the method has none."""
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)


MERGE_METHODS: Registry[MergeMethod] = Registry("merge method")


def as_float32(x: Any) -> Any:
    """A float32 tensor or numpy array of ``x`` (no copy when it already is float32)."""
    if hasattr(x, "float"):  # torch.Tensor
        return x.float()
    return x.astype("float32", copy=False)


def register_method(
    name: str,
    *,
    paper: str,
    summary: str,
    params: Sequence[Param] = (),
    **flags: Any,
) -> Callable[[MergeFn], MergeFn]:
    """Register a tensor function as a merge method (decorator).

    Example:
        >>> @register_method("mine", paper="https://arxiv.org/abs/0000.00000", summary="demo")
        ... def mine(tensors, base, **_):
        ...     return tensors[0]
    """

    def deco(fn: MergeFn) -> MergeFn:
        MERGE_METHODS.add(
            name,
            MergeMethod(
                name=name, fn=fn, paper=paper, summary=summary, params=tuple(params), **flags
            ),
        )
        return fn

    return deco
