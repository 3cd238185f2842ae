"""Check a recipe against its method's schema, before any weight is read.

:func:`check_merge_config` returns every problem of a :class:`~.recipe_schema.MergeConfig`
at once: an unknown method (with did-you-mean), the number of models, the base model,
unknown, misplaced or missing parameters, values out of range (every value a per-tensor
rule can give, :func:`~.param_rules.leaf_values`), the ``slices:`` features not supported
yet, and the method's own cross-parameter check. :func:`.recipe.load_merge_config` raises
them as one :class:`~modularevo.errors.ConfigError`.
"""

from __future__ import annotations

from typing import Any

from modularevo.errors import UnknownNameError
from modularevo.merging.param_rules import is_resolved, leaf_values, resolve_value
from modularevo.merging.recipe_inputs import effective_models, load_methods, norm_path
from modularevo.merging.recipe_schema import MergeConfig, ModelEntry, SliceEntry
from modularevo.merging.spec import MERGE_METHODS, MergeMethod, Param

# mergekit keys that only tune mergekit's own execution; accepted and ignored.
IGNORED_KEYS = frozenset({"int8_mask"})


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
    base = norm_path(cfg.base_model) if cfg.base_model else None
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
        has_base = base is not None and any(norm_path(s.model) == base for s in sl.sources)
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
