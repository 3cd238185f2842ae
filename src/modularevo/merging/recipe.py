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

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modularevo.config.load import apply_overrides, load_yaml, validate
from modularevo.errors import ConfigError, UnknownNameError
from modularevo.merging.spec import MERGE_METHODS, MergeMethod, Param
from modularevo.models.defaults import MODELS

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
# mergekit recipe keys modularevo does not implement yet: named as such, never as typos.
UNSUPPORTED_KEYS = {
    "modules": "per-module recipes of multi-module models",
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


class SliceSource(BaseModel):
    """One source of a mergekit slice: a model, the layers ``[start, end)`` taken from it,
    and its per-model parameters."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    model: str
    layer_range: tuple[int, int]
    parameters: dict[str, Any] = Field(default_factory=dict)

    @field_validator("layer_range")
    @classmethod
    def _range(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not 0 <= v[0] < v[1]:
            raise ValueError("must be [start, end) with 0 <= start < end")
        return v


class SliceDef(BaseModel):
    """One output slice of a mergekit ``slices:`` recipe: its sources (all with the same
    number of layers), merged layer by layer, and parameters for this slice."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    sources: list[SliceSource] = Field(min_length=1)
    parameters: dict[str, Any] = Field(default_factory=dict)
    base_model: str | None = None
    residual_weight: float | None = None

    @field_validator("sources")
    @classmethod
    def _same_depth(cls, v: list[SliceSource]) -> list[SliceSource]:
        depths = {s.layer_range[1] - s.layer_range[0] for s in v}
        if len(depths) > 1:
            raise ValueError(
                "every source of a slice must span the same number of layers, got "
                + ", ".join(f"{s.model} {list(s.layer_range)}" for s in v)
            )
        return v


class TokenSource(BaseModel):
    """Where a token's embedding row comes from (mergekit 0.1.5's ``source:`` forms):
    ``{kind: model_token, model: M, token: T}`` (or ``token_id: N``) takes row ``T`` of
    model ``M``; ``{kind: zero}`` a zero row. A plain model path (``source: ./m``) is
    read into :class:`TokenEmbedding` as ``model``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["model_token", "zero"]
    model: str | None = None
    token: str | None = None
    token_id: int | None = None

    @model_validator(mode="after")
    def _one_token(self) -> TokenSource:
        if self.kind == "model_token":
            if self.model is None:
                raise ValueError("kind: model_token needs `model:`")
            if (self.token is None) == (self.token_id is None):
                raise ValueError("kind: model_token needs exactly one of `token:` and `token_id:`")
        return self


class TokenEmbedding(BaseModel):
    """One entry of ``tokenizer.tokens``: the row's source and whether it replaces the
    row every model already has (``force``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    source: TokenSource | str | None = None
    force: bool = False


class TokenizerConfig(BaseModel):
    """mergekit's ``tokenizer:`` block: the output vocabulary (``source``: ``union``, the
    default, ``base`` or a model folder), tokens to add or re-source, and the row count
    rounded up to a multiple (the extra rows get the mean embedding)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    source: str = "union"
    tokens: dict[str, TokenEmbedding] | None = None
    pad_to_multiple_of: int | None = Field(default=None, ge=1)


class SliceEntry(ModelEntry):
    """A model entry made from one slice source (internal: the planner's view)."""

    layer_range: tuple[int, int]
    slice_index: int


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
        tokenizer_source: the output vocabulary (mergekit's tokenizer surgery): ``base``,
            ``union`` (every model's tokens) or a model folder; each model's embedding and
            LM-head rows are aligned to it before the merge (:mod:`.tokenizer`). Unset:
            the base's files are copied and every model must share its vocabulary.
        tokenizer: mergekit's ``tokenizer:`` block (:class:`TokenizerConfig`); not
            together with ``tokenizer_source``.
        chat_template: written into the output's tokenizer: Jinja text, ``chatml``, or
            ``auto`` (the template most of the input models share).
        backend: ``auto`` runs methods with a numpy kernel (``linear``,
            ``task_arithmetic``) on numpy without importing torch when every tensor
            allows it, else on torch; ``torch`` or ``numpy`` force one (``numpy``
            fails with the reason when the recipe needs torch). Both give the same bytes.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    merge_method: str
    base_model: str | None = None
    models: list[ModelEntry] = Field(default_factory=list)
    slices: list[SliceDef] | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    dtype: str | None = None
    out_dtype: str | None = None
    seed: int = 0
    shard_size: int | str = "2GB"
    missing_tensors: Literal["error", "base"] = "error"
    check_finite: bool = True
    allow_other_base: bool = False
    tokenizer_source: str | None = None
    tokenizer: TokenizerConfig | None = None
    chat_template: str | None = None
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

    @model_validator(mode="after")
    def _models_or_slices(self) -> MergeConfig:
        if bool(self.models) == bool(self.slices):
            raise ValueError(
                "give either `models:` (whole models) or `slices:` (layer ranges), not both "
                "and not neither"
            )
        if self.tokenizer is not None and self.tokenizer_source is not None:
            raise ValueError("give `tokenizer_source` or a `tokenizer:` block, not both")
        return self

    @property
    def vocabulary_source(self) -> str | None:
        """The output vocabulary's source (``tokenizer.source`` or ``tokenizer_source``)."""
        return self.tokenizer.source if self.tokenizer is not None else self.tokenizer_source

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
    entries = effective_models(cfg, method)
    groups = _slice_groups(cfg, entries)
    n = max(len(g) for g in groups.values()) if groups else 0
    for where, group in groups.items():
        k = len(group)
        if k < method.min_models or (method.max_models is not None and k > method.max_models):
            most = "" if method.max_models is None else f" and at most {method.max_models}"
            problems.append(
                f"{where}: method {method.name!r} takes at least {method.min_models}{most} "
                f"model(s) besides the base, got {k}"
            )
    problems += _check_params(cfg.parameters, method, "parameters", allow_per_model=True)
    problems += _check_slices(cfg, method)
    for i, entry in enumerate(cfg.models):
        problems += _check_params(entry.parameters, method, f"models.{i}.parameters")
        if entry.mask is not None and not method.uses_masks:
            problems.append(f"models.{i}.mask: method {method.name!r} does not use module masks")
    if method.uses_masks:
        for entry in effective_models(cfg, method):
            if entry.mask is None:
                problems.append(f"models: {entry.model!r} needs `mask: <module file>`")
    problems += _check_required(cfg, method)
    template = cfg.chat_template
    if template is not None and "{" not in template and template not in ("chatml", "auto"):
        problems.append(
            f"chat_template: {template!r} holds no Jinja and is not `chatml` or `auto`; "
            "mergekit's other built-in template names are not supported yet: give the "
            "template's Jinja text"
        )
    if not problems and method.validate is not None and not cfg.slices:
        problems += method.validate(_plain_params(cfg, method), n)
    return problems


def _slice_groups(cfg: MergeConfig, entries: list[ModelEntry]) -> dict[str, list[ModelEntry]]:
    """The merged models per output group: ``models`` as one, or each slice."""
    if not cfg.slices:
        return {"models": entries}
    groups: dict[str, list[ModelEntry]] = {f"slices.{i}": [] for i in range(len(cfg.slices))}
    for e in entries:
        if isinstance(e, SliceEntry):
            groups[f"slices.{e.slice_index}"].append(e)
    return groups


def _check_slices(cfg: MergeConfig, method: MergeMethod) -> list[str]:
    if not cfg.slices:
        return []
    problems: list[str] = []
    if method.uses_masks:
        problems.append(f"slices: method {method.name!r} uses module masks; use `models:`")
    if cfg.tokenizer is not None or cfg.tokenizer_source == "union":
        problems.append(
            "slices: tokenizer surgery (`tokenizer:`, `tokenizer_source: union`) in a "
            "`slices:` merge is not supported yet by modularevo; use `models:`"
        )
    base = _norm(cfg.base_model) if cfg.base_model else None
    for i, sl in enumerate(cfg.slices):
        hints = {"base_model": "set base_model at the top level",
                 "residual_weight": "leave it out (no residual mixing)"}  # fmt: skip
        for key, hint in hints.items():
            if getattr(sl, key) is not None:
                problems.append(
                    f"slices.{i}.{key}: mergekit's per-slice `{key}` is not supported yet by "
                    f"modularevo; {hint}"
                )
        problems += _check_params(sl.parameters, method, f"slices.{i}.parameters",
                                  allow_per_model=True)  # fmt: skip
        for j, src in enumerate(sl.sources):
            problems += _check_params(src.parameters, method, f"slices.{i}.sources.{j}.parameters")
        has_base = base is not None and any(_norm(s.model) == base for s in sl.sources)
        if method.needs_base and base is not None and not has_base:
            problems.append(
                f"slices.{i}: method {method.name!r} takes task vectors against the base; list "
                "base_model among this slice's sources with the layer range to use"
            )
    return problems


def _plain_params(cfg: MergeConfig, method: MergeMethod) -> dict[str, Any]:
    """Parameters with per-tensor rules reduced to their defaults, for cross-checks."""

    def value(scopes: list[dict[str, Any]], p: Param) -> Any:
        for scope in scopes:
            if p.name in scope:
                v = resolve_value(scope[p.name], None, takes_list=p.takes_list)
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
        if isinstance(value, list) and not value and not p.takes_list:
            problems.append(f"{where}.{key}: an empty list gives no value")
            continue
        for leaf in leaf_values(value, takes_list=p.takes_list):
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
    base = _norm(cfg.base_model)
    return [m for m in models if _norm(m.model) != base]


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
    base = _norm(cfg.base_model)
    for src in cfg.slices[slice_index].sources:
        if _norm(src.model) == base:
            return src.layer_range
    return None


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


def method_of(cfg: MergeConfig) -> MergeMethod:
    """The registered method ``cfg`` names (methods imported first)."""
    load_methods()
    return MERGE_METHODS.get(cfg.merge_method)
