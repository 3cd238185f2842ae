"""The dataset registry: one :class:`DatasetSpec` per short name.

A spec says what a dataset is (kind, domain, source, licence) and how to build
its raw examples. Builders live in one small file per source family
(``math.py``, ``law.py``, ...) and register themselves with :func:`register_dataset`.

Example:
    >>> from modularevo.data import DATASETS
    >>> DATASETS.get("math-type").kind
    'task'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from modularevo.registry import Registry

Kind = Literal["corpus", "task", "generation", "images"]

# A text builder returns rows {"text", "group"[, "label"][, "target"]}; "group" decides the split
# (rows sharing a group always land in the same split, also across a domain's corpus
# and task). An image builder returns the finished splits itself.
Builder = Callable[..., Any]


@dataclass(frozen=True)
class DatasetSpec:
    """What one registered dataset is and how to build it.

    Args:
        name: registry key, e.g. ``"math-type"``.
        kind: ``"corpus"`` (column ``text``), ``"task"`` (``text``, ``label``),
            ``"generation"`` (``text`` = the question, ``target`` = the answer, ``category``
            = the row's ``label``, used to balance and to report per category) or
            ``"images"`` (``image``, ``label``).
        domain: the domain it belongs to (``math``, ``law``, ``multilingual``, ``code``,
            ``vision``); a task's domain links it to the corpus of that name.
        builder: function ``builder(**options) -> rows`` (text) or ``-> dict of splits`` (images).
        source: the packages the data comes from, with versions filled in at build time.
        licence: licence of the data itself.
        description: one line for ``data ls``/``data show``.
        options: default build options (sizes, caps); ``load_dataset(..., **options)`` overrides.
        split_fractions: train/validation/test fractions for hashed splits.
        train_per_class: for tasks, cap on train examples per class (per category for
            generation tasks; balancing);
            validation/test get ``eval_per_class``.
        eval_per_class: cap per class for validation and test.
        label_names: fixed label order for tasks; None = sorted labels found.
        extra: extra (pip/apt) requirement named in error messages when a source is missing.
    """

    name: str
    kind: Kind
    domain: str
    builder: Builder
    source: tuple[str, ...]
    licence: str
    description: str
    options: Mapping[str, Any] = field(default_factory=dict)
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    train_per_class: int | None = None
    eval_per_class: int | None = None
    label_names: tuple[str, ...] | None = None
    extra: str = "pip install 'modularevo[data]'"


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add ``spec`` to :data:`DATASETS` under ``spec.name`` and return it."""
    return DATASETS.add(spec.name, spec)
