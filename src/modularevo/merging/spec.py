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
What the executor may assume about a function (that it is elementwise, that it
runs on numpy arrays, that it wants per-tensor top-k cuts or global thresholds) is
declared in its :class:`Capabilities`. A method whose function uses array operators
only (``+ - * /`` and in-place forms, no torch calls) may declare
``Capabilities(numpy=True)``: the executor then may pass float32 numpy arrays instead
of tensors and merge without importing torch (:mod:`modularevo.merging.backend`).
:func:`call_method` is the one way a method is called, by the streaming executor, the
in-memory merge of evolution and the tests.
Methods are registered in :data:`MERGE_METHODS` with their parameter schema and
paper link, which ``modularevo ls`` prints.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from modularevo.registry import Registry
from modularevo.utils.seed import derived_generator

MergeFn = Callable[..., Any]
"""A merge method's tensor function (returns a float32 tensor or numpy array)."""

ParamsPredicate = Callable[[Mapping[str, Any]], bool]
"""A test on a method's resolved parameters (e.g. "``trim_scope`` is global")."""

Validator = Callable[[Mapping[str, Any], int], list[str]]
"""Cross-parameter checks of a method: (parameters, number of models) -> problems."""


@dataclass(frozen=True)
class Capabilities:
    """What the executor may assume about a method's tensor function.

    Each flag is a bool, or a predicate on the method's resolved parameters where the
    answer depends on them (TIES with ``trim_scope: global`` is elementwise once the
    thresholds are known; with a per-tensor trim it is not).

    Attributes:
        elementwise: output entry ``i`` depends only on input entries ``i``, so the
            executor may run the function on flat chunks of a tensor.
        numpy: the function uses array operators only and accepts float32 numpy arrays
            (the torch-free backend, :mod:`modularevo.merging.backend`).
        topk_cuts: the function trims each task vector to its top-k ``|τ|`` per tensor
            (parameter ``density``); given exact per-tensor cuts it runs on chunks.
        needs_thresholds: with ``global_stats``, whether this parameter set wants each
            model's global |τ| threshold from a pre-pass (``None``: always).
    """

    elementwise: bool | ParamsPredicate = False
    numpy: bool = False
    topk_cuts: ParamsPredicate | None = None
    needs_thresholds: ParamsPredicate | None = None

    def is_elementwise(self, params: Mapping[str, Any]) -> bool:
        """Whether, with ``params``, the function may run on flat chunks."""
        flag = self.elementwise
        return bool(flag(params) if callable(flag) else flag)

    def wants_cuts(self, params: Mapping[str, Any]) -> bool:
        """Whether, with ``params``, the function trims per tensor (exact top-k cuts)."""
        return self.topk_cuts is not None and bool(self.topk_cuts(params))

    def wants_thresholds(self, params: Mapping[str, Any]) -> bool:
        """Whether, with ``params``, the function takes global thresholds."""
        return self.needs_thresholds is None or bool(self.needs_thresholds(params))


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
    """A registered merge method: the tensor function plus what the executor must know.

    ``needs_base``: the function takes task vectors against ``base`` (required).
    ``optional_base``: it works without a base, and when the recipe names one it is
    passed as ``base`` and dropped from the models (``slerp``, ``nuslerp``,
    ``multislerp``). Otherwise a base listed among the models is one more input
    (``linear``).
    """

    name: str
    fn: MergeFn
    paper: str
    summary: str
    params: tuple[Param, ...] = ()
    needs_base: bool = True
    optional_base: bool = False
    uses_masks: bool = False
    randomized: bool = False
    global_stats: bool = False
    min_models: int = 1
    max_models: int | None = None
    capabilities: Capabilities = field(default_factory=Capabilities)
    validate: Validator | None = None

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


def method_generators(
    method: MergeMethod, seed: int, name: str, indices: Sequence[int]
) -> list[Any] | None:
    """One generator per input model for a randomized ``method``, seeded from
    (seed, tensor name, model index), so results do not depend on the order of work or
    the thread count; ``None`` for deterministic methods."""
    if not method.randomized:
        return None
    return [derived_generator(seed, name, i) for i in indices]


def call_method(
    method: MergeMethod,
    tensors: Sequence[Any],
    base: Any,
    params: Mapping[str, Any],
    *,
    generators: Sequence[Any] | None = None,
    masks: Sequence[Any] | None = None,
    thresholds: Sequence[Any] | None = None,
) -> Any:
    """Call ``method``'s tensor function with the executor's contract (see the module doc).

    Randomized methods get ``generators``, mask-aware methods get ``masks`` and methods
    with global statistics get ``thresholds``; the others get ``None`` for each, so a
    method never sees an input it did not declare.

    Args:
        method: the registered method.
        tensors: K float32 tensors (or numpy arrays on the numpy backend).
        base: the base's float32 tensor, or ``None`` for base-free methods.
        params: the method's resolved parameters (per-model ones as K-lists).
        generators: K generators seeded per (seed, tensor name, model index).
        masks: K bool masks (or ``None`` entries).
        thresholds: K global |τ| thresholds or per-tensor cuts.

    Returns:
        The merged float32 tensor (or array).
    """
    return method.fn(
        list(tensors),
        base,
        generators=list(generators) if method.randomized and generators is not None else None,
        masks=list(masks) if method.uses_masks and masks is not None else None,
        thresholds=list(thresholds) if thresholds is not None else None,
        **params,
    )
