"""Import heavy modules on first use, so torch-free code paths never pay for them.

``import torch`` costs 2-4 s of start-up on a small machine. The merge engine's
numpy path (elementwise methods on float weights) never touches torch, so the
modules it imports hold torch as a :class:`LazyModule` and import it only when an
attribute is first looked up.

Example:
    >>> from typing import TYPE_CHECKING
    >>> if TYPE_CHECKING:
    ...     import torch
    ... else:
    ...     torch = LazyModule("torch")
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any


class LazyModule:
    """Stands in for the module ``name`` and imports it on first attribute access.

    Looked-up attributes are cached on the proxy, so later lookups cost one
    dictionary access. The module itself is imported with the normal import
    machinery (thread-safe, shared through ``sys.modules``).

    Args:
        name: the module's import name, e.g. ``"torch"``.
    """

    def __init__(self, name: str) -> None:
        self.__dict__["_lazy_name"] = name

    def _load(self) -> ModuleType:
        return importlib.import_module(self.__dict__["_lazy_name"])

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._load(), attr)
        self.__dict__[attr] = value
        return value

    def __repr__(self) -> str:
        return f"<lazy module {self.__dict__['_lazy_name']!r}>"


def lazy_exports(package: str, names: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports each public name from its submodule on first use.

    A package whose ``__init__`` re-exports its submodules' names would otherwise import
    them all (and torch with them) as soon as any submodule is imported, e.g. a config
    schema read by the CLI.

    Args:
        package: the package's ``__name__``.
        names: public name -> submodule (relative to ``package``) that defines it.

    Example:
        >>> __getattr__ = lazy_exports(__name__, {"emoe_convert": "convert"})  # doctest: +SKIP
    """

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{names[name]}"), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
