"""Parameter kinds the merge methods need beyond :class:`~modularevo.merging.spec.Param`.

The spec's :class:`Param` checks numbers with inclusive bounds and string choices.
Merge methods also need exclusive bounds (``density`` in (0, 1]), booleans
(``normalize``), integers (``n``, ``m``) and index lists (CABS ``order``). These
subclasses keep the same interface (``check(value) -> problem | None``), so the
config validator calls them like any other :class:`Param`.

Cross-parameter rules (e.g. DELLA's ``density ± epsilon`` in (0, 1), CABS ``n <= m``)
are exposed as ``MergeMethod.validate``: a callable
``(params: Mapping[str, Any], num_models: int) -> list[str]`` that receives the
resolved parameters (per-model ones as lists of K values) and returns every problem.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from modularevo.merging.spec import MERGE_METHODS, Param


@dataclass(frozen=True)
class OpenParam(Param):
    """A number with optional exclusive bounds ``gt < value < lt`` on top of ``ge``/``le``."""

    gt: float | None = None
    lt: float | None = None

    def check(self, value: Any) -> str | None:
        """Return a problem description if ``value`` is out of range, else ``None``."""
        problem = super().check(value)
        if problem is not None:
            return problem
        if not math.isfinite(value):
            return f"must be a finite number, got {value}"
        if self.gt is not None and value <= self.gt:
            return f"must be > {self.gt}"
        if self.lt is not None and value >= self.lt:
            return f"must be < {self.lt}"
        return None


@dataclass(frozen=True)
class IntParam(Param):
    """An integer with inclusive bounds."""

    def check(self, value: Any) -> str | None:
        """Return a problem description if ``value`` is not an integer in range."""
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be an integer, got {type(value).__name__} {value!r}"
        return super().check(value)


@dataclass(frozen=True)
class FlagParam(Param):
    """A boolean (``true``/``false`` in YAML)."""

    def check(self, value: Any) -> str | None:
        """Return a problem description if ``value`` is not a bool."""
        if not isinstance(value, bool):
            return f"must be true or false, got {type(value).__name__} {value!r}"
        return None


@dataclass(frozen=True)
class IndexListParam(Param):
    """A list of distinct non-negative model indices (``[]`` means the given order)."""

    takes_list: ClassVar[bool] = True

    def check(self, value: Any) -> str | None:
        """Return a problem description if ``value`` is not a list of distinct indices."""
        if not isinstance(value, (list, tuple)):
            return f"must be a list of model indices, got {type(value).__name__} {value!r}"
        bad = [v for v in value if isinstance(v, bool) or not isinstance(v, int) or v < 0]
        if bad:
            return f"must hold non-negative integers, found {bad!r}"
        if len(set(value)) != len(value):
            return f"must not repeat an index, got {list(value)!r}"
        return None


@dataclass(frozen=True)
class RescaleParam(Param):
    """A random sparsifier's ``rescale``: ``true`` (``l1``), ``false``, ``l1``, ``inverse_p``."""

    def check(self, value: Any) -> str | None:
        """Return a problem description if ``value`` names no rescale mode."""
        if isinstance(value, bool) or value in ("l1", "inverse_p"):
            return None
        return f"must be true, false, 'l1' (mergekit) or 'inverse_p' (the paper), got {value!r}"


def weight_param(doc: str = "scale λ_t of this model's task vector") -> Param:
    """The per-model ``weight`` (mergekit's name), default 1.0, any finite real."""
    return OpenParam("weight", "per_model", default=1.0, doc=doc)


def density_param(doc: str = "fraction of entries kept, in [0, 1]") -> Param:
    """The per-model ``density`` in [0, 1], default 1.0 (keep everything; 0 keeps nothing)."""
    return OpenParam("density", "per_model", default=1.0, ge=0.0, le=1.0, doc=doc)


def flag_param(name: str, default: bool, doc: str) -> Param:
    """A global boolean parameter."""
    return FlagParam(name, "global", default=default, doc=doc)


INT8_MASK = flag_param("int8_mask", False, "accepted for mergekit recipes; no effect here")


def resolve_params(method: str, params: Mapping[str, Any], num_models: int) -> dict[str, Any]:
    """Fill defaults and broadcast per-model scalars to lists of ``num_models`` values.

    Lets the tensor functions be called directly (tests, notebooks) as well as by the
    executor, which already passes resolved values.

    Raises:
        ValueError: a required parameter is missing, a per-model list has the wrong
            length, or an unknown parameter was given (executor/programming errors:
            user configs are checked before any weight is read).
    """
    spec = MERGE_METHODS.get(method)
    known = {p.name for p in spec.params}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"{method}: unknown parameter(s) {unknown}; known: {sorted(known)}")
    out: dict[str, Any] = {}
    for p in spec.params:
        value = params.get(p.name, p.default)
        if value is None and p.default is None and not isinstance(p, IndexListParam):
            raise ValueError(f"{method}: parameter {p.name!r} is required")
        if p.kind == "per_model":
            value = _per_model(method, p.name, value, num_models)
        out[p.name] = value
    return out


def _per_model(method: str, name: str, value: Any, num_models: int) -> list[float]:
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != num_models:
            raise ValueError(
                f"{method}: per-model parameter {name!r} has {len(value)} values "
                f"for {num_models} models"
            )
        return [float(v) for v in value]
    return [float(value)] * num_models
