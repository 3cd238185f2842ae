"""Load a YAML file, apply dotted ``key=value`` overrides, validate into a frozen model.

Every problem is reported at once in a single :class:`~modularevo.errors.ConfigError`,
before any weight is read.

Example:
    >>> from pydantic import BaseModel
    >>> class Cfg(BaseModel, frozen=True):
    ...     lr: float = 1e-3
    >>> validate(Cfg, apply_overrides({}, ["lr=0.5"])).lr
    0.5
"""

from __future__ import annotations

import copy
import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from modularevo.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that reads ``1e-1`` and ``5E3`` as numbers, as YAML 1.2 and users do.

    YAML 1.1 (PyYAML's default) requires a dot in a float (``1.0e-1``) and reads ``1e-1``
    as a string; mergekit and every YAML 1.2 parser read it as 0.1.
    """


_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:float"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` with YAML 1.2 numbers (``1e-1`` is 0.1); never constructs objects."""
    return yaml.load(text, Loader=_Loader)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path``.

    Raises:
        ConfigError: if the file is missing, is not valid YAML, or is not a mapping.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError([f"config file {str(p)!r} does not exist"], source=str(p))
    try:
        data = safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {exc}"], source=str(p)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            [f"top level must be a mapping of keys, got {type(data).__name__}"], source=str(p)
        )
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"a.b=1"`` into (["a", "b"], 1); the value is parsed as YAML.

    Raises:
        ConfigError: if there is no ``=`` or the key is empty.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError([f"override {text!r} must look like key=value (e.g. seed=3)"])
    try:
        value = safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return [k for k in key.strip().split(".")], value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each dotted ``key=value`` override applied.

    Integer path parts index into lists (``models.1.weight=0.3``).
    """
    out = copy.deepcopy(data)
    problems: list[str] = []
    for text in overrides:
        try:
            path, value = parse_override(text)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        err = _set_path(out, path, value)
        if err:
            problems.append(f"override {text!r}: {err}")
    if problems:
        raise ConfigError(problems)
    return out


def _set_path(node: Any, path: list[str], value: Any) -> str | None:
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                return f"{'.'.join(path[: i + 1])!r} is not an index of a list of {len(node)}"
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            return f"{'.'.join(path[:i])!r} is a value, not a mapping"
    return None


def validate(schema: type[M], data: dict[str, Any], *, source: str | None = None) -> M:
    """Validate ``data`` into ``schema``; every error is reported at once.

    Raises:
        ConfigError: listing each invalid key with what was found and what is expected.
    """
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, schema), source=source) from None


def _format_errors(exc: ValidationError, schema: type[BaseModel] | None = None) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = unknown_key_message(schema, [str(p) for p in err["loc"]])
        got = err.get("input")
        shown = "" if err["type"] in ("missing", "extra_forbidden") else f" (got {got!r})"
        problems.append(f"{loc}: {msg}{shown}")
    return problems


def unknown_key_message(schema: type[BaseModel] | None, loc: list[str]) -> str:
    """``unknown key; did you mean 'x'? (valid keys here: ...)`` for the key at ``loc``."""
    fields = _fields_at(schema, loc[:-1]) if schema is not None else None
    if not fields:
        return "unknown key (check the spelling against the documented keys)"
    names = sorted(fields)
    close = difflib.get_close_matches(loc[-1], names, n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean {close[0]!r}?"
    where = ".".join(loc[:-1]) or "the top level"
    return f"unknown key; the keys at {where} are: {', '.join(names)}"


def _fields_at(schema: type[BaseModel], path: list[str]) -> list[str] | None:
    """The keys (and aliases) a nested model accepts at ``path``, when it is a model."""
    model: Any = schema
    for part in path:
        field = model.model_fields.get(part) if _is_model(model) else None
        if field is None:
            return None
        model = _model_in(field.annotation)
    if not _is_model(model):
        return None
    keys = set()
    for name, field in model.model_fields.items():
        keys.add(field.alias or name)
    return sorted(keys)


def _is_model(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseModel)


def _model_in(annotation: Any) -> Any:
    """The BaseModel inside ``X``, ``X | None`` or ``Optional[X]``."""
    if _is_model(annotation):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if _is_model(arg):
                return arg
    return None


def load_config(schema: type[M], path: str | Path, overrides: list[str] | None = None) -> M:
    """Load ``path``, apply ``overrides`` and validate into ``schema``.

    Raises:
        ConfigError: on any problem, with all problems listed.
    """
    data = apply_overrides(load_yaml(path), overrides or [])
    return validate(schema, data, source=str(path))
