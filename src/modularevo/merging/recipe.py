"""The merge recipe: a frozen :class:`MergeConfig`, compatible with mergekit YAML.

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

Example:
    >>> cfg = load_merge_config("recipe.yaml", ["seed=3"])  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import logging
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from modularevo.config.load import apply_overrides, load_yaml, validate
from modularevo.errors import ConfigError, UnknownNameError
from modularevo.merging.spec import MERGE_METHODS, MergeMethod, Param

log = logging.getLogger(__name__)

DTYPE_NAMES = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}
# mergekit keys that only tune mergekit's own execution; accepted and ignored.
IGNORED_KEYS = frozenset({"int8_mask"})
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?(?:e\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)
_UNITS = {
    "": 1,
    **{u: 10 ** (3 * i) for i, u in enumerate(("", "k", "m", "g", "t"), 0) if u},
    **{u + "b": 10 ** (3 * i) for i, u in enumerate(("k", "m", "g", "t"), 1)},
    **{u + "ib": 2 ** (10 * i) for i, u in enumerate(("k", "m", "g", "t"), 1)},
    "b": 10**9,
}


class ModelEntry(BaseModel):
    """One input model: a path, its per-model parameters, an optional module mask file."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    model: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    mask: str | None = None


class MergeConfig(BaseModel):
    """A validated merge recipe (see the module docstring for the YAML form).

    Attributes:
        merge_method: a registered method (``modularevo ls`` lists them).
        base_model: the model task vectors are taken against.
        models: the input models.
        parameters: method parameters; per-model ones here apply to every model.
        dtype: mergekit's dtype; the output dtype when ``out_dtype`` is unset
            (computation is always float32).
        out_dtype: output dtype of float tensors; default: the base model's.
        seed: seeds every random choice (with the tensor name and model index).
        shard_size: output shard size, bytes or e.g. ``"2GB"``.
        missing_tensors: ``error``, or ``base``: a model lacking a tensor the base has
            contributes the base's value (no change); tensors missing from the
            base are left out.
        check_finite: refuse inputs holding NaN or Inf.
        allow_other_base: accept module masks learned on another base than ``base_model``
            (their stored base fingerprint differs).
        tokenizer_source: folder to copy tokenizer/config files from (default: base).
        backend: ``auto`` runs methods with a numpy kernel (``linear``,
            ``task_arithmetic``) on numpy without importing torch when every tensor
            allows it, else on torch; ``torch`` or ``numpy`` force one (``numpy``
            fails with the reason when the recipe needs torch). Both give the same bytes.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    merge_method: str
    base_model: str | None = None
    models: list[ModelEntry] = Field(min_length=1)
    parameters: dict[str, Any] = Field(default_factory=dict)
    dtype: str | None = None
    out_dtype: str | None = None
    seed: int = 0
    shard_size: int | str = "2GB"
    missing_tensors: Literal["error", "base"] = "error"
    check_finite: bool = True
    allow_other_base: bool = False
    tokenizer_source: str | None = None
    name: str | None = None
    backend: Literal["auto", "torch", "numpy"] = "auto"

    @field_validator("dtype", "out_dtype")
    @classmethod
    def _known_dtype(cls, v: str | None) -> str | None:
        if v is not None and v not in DTYPE_NAMES:
            raise ValueError(f"unknown dtype; use one of {', '.join(sorted(DTYPE_NAMES))}")
        return DTYPE_NAMES[v] if v is not None else None

    @field_validator("shard_size")
    @classmethod
    def _size(cls, v: int | str) -> int | str:
        shard_bytes(v)
        return v

    @property
    def output_dtype(self) -> str | None:
        """The requested output dtype name, or ``None`` to keep the base's dtypes."""
        return self.out_dtype or self.dtype

    @property
    def shard_bytes(self) -> int:
        """``shard_size`` in bytes."""
        return shard_bytes(self.shard_size)


def shard_bytes(v: int | str) -> int:
    """Parse a size into bytes: ``2GB``, ``500MB``, ``1GiB``, ``5B`` (billion, as in mergekit), 123.

    Raises:
        ValueError: if the text is not a positive size.
    """
    if isinstance(v, int) and not isinstance(v, bool):
        n = v
    else:
        m = _SIZE.match(str(v))
        unit = (m.group(2) or "").lower() if m else ""
        if not m or unit not in _UNITS:
            raise ValueError("not a size; write e.g. 2GB, 500MB, 1GiB or a number of bytes")
        n = int(float(m.group(1)) * _UNITS[unit])
    if n <= 0:
        raise ValueError("must be positive")
    return n


def load_methods() -> None:
    """Import the registered merge methods (their modules register on import)."""
    for mod in ("modularevo.merging.methods",):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise


def matches(pattern: str, name: str) -> bool:
    """Whether the per-tensor rule ``pattern`` applies to tensor ``name`` (substring or regex)."""
    if pattern in name:
        return True
    try:
        return re.search(pattern, name) is not None
    except re.error:
        return False


_NO_MATCH = object()


def resolve_value(value: Any, name: str | None) -> Any:
    """The value of a (possibly per-tensor) parameter for tensor ``name``.

    With ``name=None`` only a plain value or a rule's ``default`` resolves.
    Returns a sentinel (not a value) when no rule matches.
    """
    if isinstance(value, dict):
        for pattern, v in value.items():
            if pattern not in ("default", "*") and name is not None and matches(pattern, name):
                return v
        return value.get("default", value.get("*", _NO_MATCH))
    if isinstance(value, list) and value and all(isinstance(e, dict) for e in value):
        fallback: Any = _NO_MATCH
        for entry in value:
            flt = entry.get("filter")
            if flt is None:
                fallback = entry.get("value")
            elif name is not None and flt in name:
                return entry.get("value")
        return fallback
    return value


def is_resolved(value: Any) -> bool:
    """False for the no-match sentinel of :func:`resolve_value`."""
    return value is not _NO_MATCH


def leaf_values(value: Any) -> list[Any]:
    """Every value a (possibly per-tensor) parameter can take, for range checks."""
    if isinstance(value, dict):
        return list(value.values())
    if isinstance(value, list) and value and all(isinstance(e, dict) for e in value):
        return [e.get("value") for e in value]
    return [value]


def check_merge_config(cfg: MergeConfig) -> list[str]:
    """Check ``cfg`` against its method's schema; every problem is returned, none raised.

    Checks the method name (with did-you-mean), the number of models, the base
    model, unknown parameters, per-model parameters given as global ones and vice
    versa, required parameters, and every value's range.
    """
    load_methods()
    try:
        method = MERGE_METHODS.get(cfg.merge_method)
    except UnknownNameError as exc:
        return [f"merge_method: {exc}"]
    problems: list[str] = []
    if method.needs_base and not cfg.base_model:
        problems.append(
            f"base_model: method {method.name!r} needs a base_model (the pretrained model)"
        )
    n = len(effective_models(cfg, method))
    if n < method.min_models or (method.max_models is not None and n > method.max_models):
        most = "" if method.max_models is None else f" and at most {method.max_models}"
        problems.append(
            f"models: method {method.name!r} takes at least {method.min_models}{most} model(s) "
            f"besides the base, got {n}"
        )
    problems += _check_params(cfg.parameters, method, "parameters", allow_per_model=True)
    for i, entry in enumerate(cfg.models):
        problems += _check_params(entry.parameters, method, f"models.{i}.parameters")
        if entry.mask is not None and not method.uses_masks:
            problems.append(f"models.{i}.mask: method {method.name!r} does not use module masks")
    if method.uses_masks:
        for entry in effective_models(cfg, method):
            if entry.mask is None:
                problems.append(f"models: {entry.model!r} needs `mask: <module file>`")
    problems += _check_required(cfg, method)
    if not problems and method.validate is not None:
        problems += method.validate(_plain_params(cfg, method), n)
    return problems


def _plain_params(cfg: MergeConfig, method: MergeMethod) -> dict[str, Any]:
    """Parameters with per-tensor rules reduced to their defaults, for cross-checks."""

    def value(scopes: list[dict[str, Any]], p: Param) -> Any:
        for scope in scopes:
            if p.name in scope:
                v = resolve_value(scope[p.name], None)
                if is_resolved(v):
                    return v
        return p.default

    out: dict[str, Any] = {}
    for p in method.params:
        if p.kind == "per_model":
            out[p.name] = [
                value([e.parameters, cfg.parameters], p) for e in effective_models(cfg, method)
            ]
        else:
            out[p.name] = value([cfg.parameters], p)
    return out


def _check_params(
    params: dict[str, Any], method: MergeMethod, where: str, *, allow_per_model: bool = False
) -> list[str]:
    problems = []
    known = {p.name: p for p in method.params}
    for key, value in params.items():
        if key in IGNORED_KEYS:
            continue
        if key not in known:
            problems.append(f"{where}.{key}: {_unknown_param(key, method)}")
            continue
        p = known[key]
        if p.kind == "global" and not allow_per_model:
            problems.append(
                f"{where}.{key}: {key!r} is a global parameter; set it under `parameters:`"
            )
        if p.takes_list and not isinstance(value, dict) and not _is_filter_list(value):
            err = p.check(value)
            if err:
                problems.append(f"{where}.{key}: {err} (got {value!r})")
            continue
        if isinstance(value, list) and value and not isinstance(value[0], dict):
            problems.append(
                f"{where}.{key}: lists of values (mergekit gradients) are not supported; "
                "use a mapping of tensor-name patterns to values"
            )
            continue
        for leaf in leaf_values(value):
            err = p.check(leaf)
            if err:
                problems.append(f"{where}.{key}: {err} (got {leaf!r})")
    return problems


def _is_filter_list(value: Any) -> bool:
    """Mergekit's per-tensor ``[{filter: ..., value: ...}, ...]`` form."""
    return isinstance(value, list) and bool(value) and all(isinstance(e, dict) for e in value)


def _unknown_param(key: str, method: MergeMethod) -> str:
    import difflib

    names = [p.name for p in method.params]
    close = difflib.get_close_matches(key, names, n=2, cutoff=0.5)
    hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
    return (
        f"unknown parameter of {method.name!r}.{hint} Its parameters: "
        f"{', '.join(names) or 'none'} (see `modularevo ls`)"
    )


def _check_required(cfg: MergeConfig, method: MergeMethod) -> list[str]:
    problems = []
    for p in method.params:
        if p.default is not None or p.name in cfg.parameters:
            continue
        if p.kind == "per_model":
            for entry in effective_models(cfg, method):
                if p.name not in entry.parameters:
                    problems.append(f"{entry.model}: parameter {p.name!r} is required ({p.doc})")
        else:
            problems.append(f"parameters.{p.name}: required by {method.name!r} ({p.doc})")
    return problems


def effective_models(cfg: MergeConfig, method: MergeMethod) -> list[ModelEntry]:
    """The models merged against the base: as mergekit does, an entry naming the base
    model itself is dropped for methods that take task vectors against it."""
    if not method.needs_base or not cfg.base_model:
        return list(cfg.models)
    base = _norm(cfg.base_model)
    return [m for m in cfg.models if _norm(m.model) != base]


def _norm(path: str) -> str:
    p = Path(path).expanduser()
    return str(p.resolve()) if p.exists() else str(p)


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
    data = apply_overrides(data, overrides or [])
    cfg = validate(MergeConfig, data, source=where)
    problems = check_merge_config(cfg)
    if problems:
        raise ConfigError(problems, source=where)
    return cfg, data


def method_of(cfg: MergeConfig) -> MergeMethod:
    """The registered method ``cfg`` names (methods imported first)."""
    load_methods()
    return MERGE_METHODS.get(cfg.merge_method)
