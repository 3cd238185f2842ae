"""What a recipe names, resolved: its merge method and the models merged besides the base.

:func:`method_of` looks the recipe's method up in the registry (importing the
methods first); :func:`effective_models` lists the input models the method gets,
one :class:`~.recipe_schema.ModelEntry` per model or, in a ``slices:`` recipe, one
:class:`~.recipe_schema.SliceEntry` per slice source. The validator
(:mod:`.recipe_checks`) and the planner (:mod:`.plan`) both read a recipe through these.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from modularevo.merging.recipe_schema import MergeConfig, ModelEntry, SliceEntry
from modularevo.merging.spec import MERGE_METHODS, MergeMethod


def load_methods() -> None:
    """Import the registered merge methods (their modules register on import)."""
    for mod in ("modularevo.merging.methods",):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise


def method_of(cfg: MergeConfig) -> MergeMethod:
    """The registered method ``cfg`` names (methods imported first)."""
    load_methods()
    return MERGE_METHODS.get(cfg.merge_method)


def base_is_separate(method: MergeMethod) -> bool:
    """Whether the method receives the base model as its own ``base`` argument.

    True for methods on task vectors (``needs_base``) and for those with an optional
    base (``slerp``: the base is the t=0 end); false for averages that take the base,
    if listed, as one more input (``linear``).
    """
    return method.needs_base or method.optional_base


def effective_models(cfg: MergeConfig, method: MergeMethod) -> list[ModelEntry]:
    """The models merged besides the base: as mergekit does, an entry naming the base
    model itself is dropped when the method receives the base separately
    (:func:`base_is_separate`), e.g. mergekit's SLERP form that lists both ends."""
    models = list(cfg.models) if not cfg.slices else _slice_entries(cfg)
    if not base_is_separate(method) or not cfg.base_model:
        return models
    base = norm_path(cfg.base_model)
    return [m for m in models if norm_path(m.model) != base]


def _slice_entries(cfg: MergeConfig) -> list[ModelEntry]:
    """One entry per slice source; its parameters over the slice's (mergekit's order)."""
    return [
        SliceEntry(
            model=src.model,
            parameters={**sl.parameters, **src.parameters},
            layer_range=src.layer_range,
            slice_index=i,
        )
        for i, sl in enumerate(cfg.slices or [])
        for src in sl.sources
    ]


def slice_base_range(cfg: MergeConfig, slice_index: int) -> tuple[int, int] | None:
    """The layer range of the base model's source in slice ``slice_index`` (None: absent)."""
    if not cfg.slices or not cfg.base_model:
        return None
    base = norm_path(cfg.base_model)
    for src in cfg.slices[slice_index].sources:
        if norm_path(src.model) == base:
            return src.layer_range
    return None


def norm_path(path: str) -> str:
    """``path`` with ``~`` expanded and, when it exists, resolved: how model paths are compared."""
    p = Path(path).expanduser()
    return str(p.resolve()) if p.exists() else str(p)
