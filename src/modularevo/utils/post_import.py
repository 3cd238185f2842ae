"""Run a callback right after a module is first imported, without importing it ourselves.

``import modularevo`` must stay fast and torch-free, yet the extracted-module classes
(:mod:`modularevo.deploy.hf_pruned`) should be known to ``transformers``' Auto classes
whenever both are in use. :func:`when_imported` defers the registration to the moment
the user (or modularevo) imports ``transformers``; if it is already imported, the
callback runs on the next :func:`run_pending` call.

Example:
    >>> when_imported("json", lambda mod: None)  # runs now: json is already imported
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

Callback = Callable[[ModuleType], None]
_PENDING: dict[str, list[Callback]] = {}


def _run(name: str, module: ModuleType) -> None:
    for callback in _PENDING.pop(name, []):
        try:
            callback(module)
        except Exception as exc:  # a failing hook must never break the user's import
            log.debug("post-import hook for %s failed: %s", name, exc)


class _Loader(importlib.abc.Loader):
    """Wraps the real loader; runs the callbacks once the module is executed."""

    def __init__(self, inner: importlib.abc.Loader, name: str) -> None:
        self._inner = inner
        self._name = name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._inner.exec_module(module)
        _run(self._name, module)

    def __getattr__(self, attr: str) -> Any:  # get_resource_reader, is_package, ...
        return getattr(self._inner, attr)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the loader of a watched module found by the others."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _PENDING:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _Loader(spec.loader, fullname)
                return spec
        return None


_FINDER = _Finder()


def when_imported(name: str, callback: Callback) -> None:
    """Call ``callback(module)`` once module ``name`` is imported (now, if it already is)."""
    _PENDING.setdefault(name, []).append(callback)
    if name in sys.modules:
        _run(name, sys.modules[name])
    elif _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def run_first(cls: type, names: Sequence[str], prepare: Callable[[], None]) -> None:
    """Make each classmethod ``cls.<name>`` call ``prepare()`` (once) before it runs.

    Used when work cannot run inside an import hook (the module's dependencies may still
    be half-imported then) but must happen before the first call, e.g. registering
    classes with ``transformers.AutoConfig`` right before ``from_pretrained``.
    """
    done: list[bool] = []

    def ready() -> None:
        if not done:
            done.append(True)
            prepare()

    for name in names:
        method = cls.__dict__.get(name)
        if not isinstance(method, classmethod):
            continue
        func = method.__func__

        def wrapped(inner: type, *args: Any, __func: Any = func, **kwargs: Any) -> Any:
            ready()
            return __func(inner, *args, **kwargs)

        wrapped.__name__ = func.__name__
        wrapped.__qualname__ = func.__qualname__
        wrapped.__doc__ = func.__doc__
        setattr(cls, name, classmethod(wrapped))
