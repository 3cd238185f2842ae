"""The merge recipe: load a mergekit-compatible YAML into a checked :class:`MergeConfig`.

A mergekit recipe for a method both tools share runs unchanged::

    merge_method: ties
    base_model: ./base
    models:
      - model: ./math
        parameters: {weight: 0.5, density: 0.2}
      - model: ./law
        parameters: {weight: 0.5, density: 0.2}
    parameters: {normalize: true}
    dtype: float16

A parameter value is a number (or string), or a per-tensor rule: a mapping of
patterns (regular expressions searched in the tensor name; plain substrings
work) to values, with an optional ``default`` key, or mergekit's list of
``{filter: substring, value: x}`` entries. The first matching rule wins.
Per-model parameters (e.g. ``weight``, ``density``) may be set per model or
under the top-level ``parameters`` (then they apply to every model).

:func:`load_merge_config` reads the YAML, applies ``key=value`` overrides, puts
embedded model names and quoted numbers in their place, validates the schema and
checks it against the method, reporting every problem at once. The recipe's parts
live beside it, and their public names are importable from here too:

* :mod:`.recipe_schema`: the frozen pydantic models (:class:`MergeConfig`, ...);
* :mod:`.param_rules`: which value of a per-tensor rule applies to a tensor;
* :mod:`.recipe_inputs`: the method a recipe names and the models it merges;
* :mod:`.recipe_checks`: the checks against the method's schema.

Example:
    >>> cfg = load_merge_config("recipe.yaml", ["seed=3"])  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from modularevo.config.load import apply_overrides, load_yaml, validate
from modularevo.errors import ConfigError
from modularevo.merging.param_rules import (
    interpolate,
    is_gradient,
    is_regex,
    is_resolved,
    leaf_values,
    matches,
    resolve_value,
)
from modularevo.merging.recipe_checks import IGNORED_KEYS, check_merge_config
from modularevo.merging.recipe_inputs import (
    base_is_separate,
    effective_models,
    load_methods,
    method_of,
    slice_base_range,
)
from modularevo.merging.recipe_schema import (
    DTYPE_NAMES,
    MergeConfig,
    ModelEntry,
    SliceDef,
    SliceEntry,
    SliceSource,
    TokenEmbedding,
    TokenizerConfig,
    TokenSource,
    shard_bytes,
)
from modularevo.merging.spec import MERGE_METHODS, Param
from modularevo.models.defaults import MODELS

__all__ = [
    "DTYPE_NAMES",
    "IGNORED_KEYS",
    "UNSUPPORTED_KEYS",
    "MergeConfig",
    "ModelEntry",
    "SliceDef",
    "SliceEntry",
    "SliceSource",
    "TokenEmbedding",
    "TokenSource",
    "TokenizerConfig",
    "base_is_separate",
    "check_merge_config",
    "coerce_numbers",
    "effective_models",
    "embedded_model_paths",
    "interpolate",
    "is_gradient",
    "is_regex",
    "is_resolved",
    "leaf_values",
    "load_merge_config",
    "load_methods",
    "matches",
    "method_of",
    "resolve_value",
    "shard_bytes",
    "slice_base_range",
]

log = logging.getLogger(__name__)

# mergekit recipe keys modularevo does not implement yet: named as such, never as typos.
UNSUPPORTED_KEYS = {
    "modules": "per-module recipes of multi-module models",
}


def load_merge_config(
    source: str | Path | dict[str, Any] | MergeConfig, overrides: list[str] | None = None
) -> tuple[MergeConfig, dict[str, Any]]:
    """Load, override and fully check a merge recipe before any weight is read.

    Args:
        source: a YAML path, a dict, or a :class:`MergeConfig`.
        overrides: dotted ``key=value`` overrides (``parameters.lambda=0.5``).

    Returns:
        (the validated config, the recipe as written after overrides).

    Raises:
        ConfigError: listing every problem at once.
    """
    where = str(source) if isinstance(source, (str, Path)) else None
    if isinstance(source, MergeConfig):
        data = source.model_dump(exclude_defaults=True)
    elif isinstance(source, dict):
        data = source
    else:
        data = load_yaml(source)
    data = embedded_model_paths(apply_overrides(data, overrides or []))
    unsupported = [
        f"{key}: mergekit's `{key}` ({what}) is not supported yet by modularevo; "
        "docs/merging.md lists what is"
        for key, what in UNSUPPORTED_KEYS.items()
        if data.get(key) is not None
    ]
    checked = {k: v for k, v in coerce_numbers(data).items() if k not in UNSUPPORTED_KEYS}
    if unsupported:
        try:
            unsupported += check_merge_config(validate(MergeConfig, checked, source=where))
        except ConfigError as exc:  # `modules:` replaces `models:`: no need to ask for them
            unsupported += [p for p in exc.problems if "give either `models:`" not in p]
        raise ConfigError(unsupported, source=where)
    cfg = validate(MergeConfig, checked, source=where)
    problems = check_merge_config(cfg)
    if problems:
        raise ConfigError(problems, source=where)
    return cfg, data


def embedded_model_paths(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of the recipe with embedded model names (``minilm``, ``tiny-bert``) as their
    cached folders, wherever a model path goes: ``base_model``, ``models[].model``,
    ``slices[].sources[].model`` and ``tokenizer_source``. A local folder of the same
    name wins over the embedded model.
    """

    def fix(value: Any) -> Any:
        if isinstance(value, str) and value in MODELS.names() and not Path(value).exists():
            return str(MODELS.get(value).locate())
        return value

    def fix_entry(entry: Any) -> Any:
        if isinstance(entry, dict) and "model" in entry:
            return {**entry, "model": fix(entry["model"])}
        return entry

    out = dict(data)
    for key in ("base_model", "tokenizer_source"):
        if key in out:
            out[key] = fix(out[key])
    if isinstance(out.get("models"), list):
        out["models"] = [fix_entry(e) for e in out["models"]]
    if isinstance(out.get("slices"), list):
        out["slices"] = [
            {**sl, "sources": [fix_entry(src) for src in sl["sources"]]}
            if isinstance(sl, dict) and isinstance(sl.get("sources"), list)
            else sl
            for sl in out["slices"]
        ]
    return out


def coerce_numbers(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of the recipe with quoted numbers and booleans of known parameters as values.

    mergekit 0.1.5 validates each parameter with its declared type in pydantic's lax
    mode, so ``weight: "0.5"`` is 0.5 and ``normalize: "true"`` is true; this does the
    same for the method's numeric and boolean parameters (strings of choice
    parameters are left alone). Unknown methods and parameters are left as written.
    """
    load_methods()
    name = data.get("merge_method")
    if not isinstance(name, str) or name not in MERGE_METHODS.names():
        return data
    schema = {p.name: p for p in MERGE_METHODS.get(name).params}
    out = dict(data)

    def fix(params: Any) -> Any:
        if not isinstance(params, dict):
            return params
        return {
            k: _map_leaves(v, lambda x, p=schema[k]: _coerce(p, x)) if k in schema else v
            for k, v in params.items()
        }

    if "parameters" in out:
        out["parameters"] = fix(out["parameters"])
    if isinstance(out.get("slices"), list):
        out["slices"] = [_fix_slice(sl, fix) for sl in out["slices"]]
    if isinstance(out.get("models"), list):
        out["models"] = [
            {**m, "parameters": fix(m["parameters"])}
            if isinstance(m, dict) and "parameters" in m
            else m
            for m in out["models"]
        ]
    return out


def _fix_slice(sl: Any, fix: Any) -> Any:
    if not isinstance(sl, dict):
        return sl
    out = dict(sl)
    if "parameters" in out:
        out["parameters"] = fix(out["parameters"])
    if isinstance(out.get("sources"), list):
        out["sources"] = [
            {**src, "parameters": fix(src["parameters"])}
            if isinstance(src, dict) and "parameters" in src
            else src
            for src in out["sources"]
        ]
    return out


_TRUE = frozenset({"true", "yes", "on", "1", "y", "t"})
_FALSE = frozenset({"false", "no", "off", "0", "n", "f"})


def _coerce(p: Param, value: Any) -> Any:
    if not isinstance(value, str) or p.choices or p.takes_list:
        return value
    text = value.strip().lower()
    if p.default is not None and isinstance(p.default, bool):
        return True if text in _TRUE else False if text in _FALSE else value
    try:
        number = float(text)
    except ValueError:
        return value
    return int(number) if number.is_integer() and "." not in text and "e" not in text else number


def _map_leaves(value: Any, fn: Any) -> Any:
    if isinstance(value, dict):
        return {k: _map_leaves(v, fn) if k != "filter" else v for k, v in value.items()}
    if isinstance(value, list):
        return [_map_leaves(v, fn) for v in value]
    return fn(value)
