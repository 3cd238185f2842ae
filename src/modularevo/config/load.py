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
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from modularevo.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path``.

    Raises:
        ConfigError: if the file is missing, is not valid YAML, or is not a mapping.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError([f"config file {str(p)!r} does not exist"], source=str(p))
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
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
        value = yaml.safe_load(raw) if raw.strip() else None
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
        raise ConfigError(_format_errors(exc), source=source) from None


def _format_errors(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; `modularevo ls` lists parameters)"
        got = err.get("input")
        shown = "" if err["type"] in ("missing", "extra_forbidden") else f" (got {got!r})"
        problems.append(f"{loc}: {msg}{shown}")
    return problems


def load_config(schema: type[M], path: str | Path, overrides: list[str] | None = None) -> M:
    """Load ``path``, apply ``overrides`` and validate into ``schema``.

    Raises:
        ConfigError: on any problem, with all problems listed.
    """
    data = apply_overrides(load_yaml(path), overrides or [])
    return validate(schema, data, source=str(path))
