"""Per-tensor parameter rules: which value of a recipe parameter applies to which tensor.

A parameter value is a number (or string), or a per-tensor rule: a mapping of
patterns (regular expressions searched in the tensor name; plain substrings
work) to values, with an optional ``default`` key, or mergekit's list of
``{filter: substring, value: x}`` entries; the first matching rule wins. A plain
list of values is a mergekit layer gradient, interpolated over the layer depth.

Pure functions of the value, the tensor name and its depth (no schema, no IO):
:func:`resolve_value` picks a value, :func:`leaf_values` lists every value a rule can
give (for range checks).

Example:
    >>> resolve_value({"mlp": 0.5, "default": 1.0}, "layers.0.mlp.weight")
    0.5
"""

from __future__ import annotations

import re
from typing import Any

_REGEX_CHARS = frozenset("\\^$*+?{}[]|()")


def is_regex(pattern: str) -> bool:
    """Whether a mapping-rule key is a regular expression.

    It is one when it holds any of ``\\ ^ $ * + ? { } [ ] | ( )``.

    Any other key, dots included, is a plain substring: ``"layers.1."`` matches
    ``layers.1.mlp`` and not ``layers.10.mlp``.
    """
    return any(c in _REGEX_CHARS for c in pattern)


def matches(pattern: str, name: str) -> bool:
    """Whether the per-tensor rule ``pattern`` applies to tensor ``name``.

    A plain key (see :func:`is_regex`) is searched as a substring; a key with regex
    characters is searched as a regular expression; ``"*"`` matches every tensor.
    """
    if pattern == "*":
        return True
    if not is_regex(pattern):
        return pattern in name
    try:
        return re.search(pattern, name) is not None
    except re.error:
        return False


_NO_MATCH = object()


def is_gradient(value: Any) -> bool:
    """A mergekit layer gradient: a non-empty list of plain values (``[0, 0.5, 1]``)."""
    return (
        isinstance(value, list)
        and bool(value)
        and not any(isinstance(e, (dict, list)) for e in value)
    )


def interpolate(values: list[Any], t: float) -> Any:
    """A gradient's value at depth ``t`` in [0, 1], as mergekit 0.1.5 evaluates it.

    Numbers are interpolated linearly between the two neighbouring anchors
    (``scaled = t·(n−1)``); a list holding a non-number picks ``values[int(t·(n−1))]``.
    """
    n = len(values)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return values[int(t * (n - 1))]
    scaled = t * (n - 1)
    i0 = int(scaled)
    i1 = min(n - 1, i0 + 1)
    frac = scaled - i0
    return (1 - frac) * values[i0] + frac * values[i1]


def resolve_value(value: Any, name: str | None, t: float = 0.0, *, takes_list: bool = False) -> Any:
    """The value of a (possibly per-tensor) parameter for tensor ``name`` at layer depth ``t``.

    Forms (mergekit 0.1.5's ``evaluate_setting`` for the list forms):

    * a plain value;
    * a gradient ``[v0, ..., vn]``: interpolated at ``t`` (:func:`interpolate`), unless
      the parameter's value is itself a list (``takes_list``);
    * mergekit's filter list ``[{filter: s, value: v}, ...]``: the *first* entry whose
      filter is a substring of ``name``, is ``"*"`` or is absent wins (an entry without
      a filter therefore only acts as a fallback when it comes last); ``v`` may be a
      gradient;
    * modularevo's mapping ``{pattern: v, ..., default: v}``: the first key that
      :func:`matches` ``name`` wins, else ``default`` (or ``"*"``).

    With ``name=None`` only plain values, gradients and fallbacks resolve.
    Returns a sentinel (not a value) when no rule matches.
    """
    if isinstance(value, dict) and "value" in value and set(value) <= {"value", "filter"}:
        value = [value]  # mergekit's single conditional parameter
    if isinstance(value, dict):
        for pattern, v in value.items():
            if pattern not in ("default", "*") and name is not None and matches(pattern, name):
                return resolve_value(v, name, t, takes_list=takes_list)
        fallback = value.get("default", value.get("*", _NO_MATCH))
        return resolve_value(fallback, name, t, takes_list=takes_list)
    if _is_filter_list(value):
        for entry in value:
            flt = entry.get("filter")
            if flt is None or flt == "*" or (name is not None and str(flt) in name):
                return resolve_value(entry.get("value"), name, t, takes_list=takes_list)
        return _NO_MATCH
    if is_gradient(value) and not takes_list:
        return interpolate(value, t)
    return value


def is_resolved(value: Any) -> bool:
    """False for the no-match sentinel of :func:`resolve_value`."""
    return value is not _NO_MATCH


def leaf_values(value: Any, *, takes_list: bool = False) -> list[Any]:
    """Every value a (possibly per-tensor, possibly graded) parameter can take, for range checks."""
    if isinstance(value, dict) and "value" in value and set(value) <= {"value", "filter"}:
        value = [value]
    if isinstance(value, dict):
        return [x for v in value.values() for x in leaf_values(v, takes_list=takes_list)]
    if _is_filter_list(value):
        return [x for e in value for x in leaf_values(e.get("value"), takes_list=takes_list)]
    if is_gradient(value) and not takes_list:
        return list(value)
    return [value]


def _is_filter_list(value: Any) -> bool:
    """Mergekit's per-tensor ``[{filter: ..., value: ...}, ...]`` form."""
    return isinstance(value, list) and bool(value) and all(isinstance(e, dict) for e in value)
